// KafkaJS against a Strata broker's Kafka listener: create a topic, produce, consume it
// from the beginning in a group, commit. Usage: node kafkajs_client.js BOOTSTRAP.
// Exits non-zero with the failed check on stderr; prints a JSON summary.
const assert = require("assert");
const { Kafka, logLevel } = require("kafkajs");

const N = 40;

async function main() {
  const kafka = new Kafka({ brokers: [process.argv[2]], clientId: "kafkajs-test", logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: "kjs", numPartitions: 2 }] });
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < N; i++) {
    messages.push({ key: `k${i}`, value: `kafkajs-${i}`, partition: i % 2, headers: { h: "js" } });
  }
  await producer.send({ topic: "kjs", acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: "kjsg" });
  await consumer.connect();
  await consumer.subscribe({ topic: "kjs", fromBeginning: true });
  const seen = new Map();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${seen.size} of ${N} in 60 s`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        const key = message.key.toString();
        assert.strictEqual(message.value.toString(), `kafkajs-${key.slice(1)}`);
        assert.strictEqual(message.headers.h.toString(), "js");
        seen.set(key, message.offset);
        if (seen.size === N) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect(); // commits what was read
  const offsets = await admin.fetchOffsets({ groupId: "kjsg", topics: ["kjs"] });
  const committed = {};
  for (const p of offsets[0].partitions) committed[p.partition] = Number(p.offset);
  await admin.disconnect();
  console.log(JSON.stringify({ read: seen.size, committed }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
