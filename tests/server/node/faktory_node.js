// Drive Node's faktory-worker (unmodified, from npm) against a server.
//   node faktory_node.js URL push QUEUE JOBTYPE ARGS_JSON [JID]
//   node faktory_node.js URL work QUEUE
// Handlers print "ran <jobtype> <args json>"; "fail" throws, "hang" prints "started" and waits.
"use strict";
const faktory = require("faktory-worker");

async function main() {
  const [url, command, queue, jobtype, args, jid] = process.argv.slice(2);
  process.env.FAKTORY_URL = url;
  if (command === "push") {
    const client = await faktory.connect({ url });
    const job = client.job(jobtype, ...JSON.parse(args));
    job.queue = queue;
    if (jid) job.jid = jid;
    await job.push();
    await client.close();
    console.log("pushed");
    return;
  }
  for (const type of ["ok", "fail", "hang"]) {
    faktory.register(type, async (...jobArgs) => {
      console.log(`ran ${type} ${JSON.stringify(jobArgs)}`);
      if (type === "fail") throw new Error("asked to fail");
      if (type === "hang") {
        console.log("started");
        await new Promise(() => {});
      }
    });
  }
  await faktory.work({ url, queues: [queue], concurrency: 1, beatInterval: 5 });
  console.log("working");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
