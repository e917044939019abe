// Reads one record from a canonical topic and decodes it with Confluent's wire format
// through the schema registry, using only third-party clients (kafkajs + its registry lib).
const { Kafka, logLevel } = require('kafkajs');
const { SchemaRegistry } = require('@kafkajs/confluent-schema-registry');
const [bootstrap, registryUrl, topic] = process.argv.slice(2);
async function main() {
  const kafka = new Kafka({ brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const registry = new SchemaRegistry({ host: registryUrl });
  const consumer = kafka.consumer({ groupId: `node-reader-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no record within 30 s')), 30000);
    consumer.run({ eachMessage: async ({ message }) => {
      const value = await registry.decode(message.value);
      value.resource = value.resource.toString('utf8'); // Avro bytes: the FHIR JSON
      process.stdout.write(JSON.stringify(value) + '\n');
      clearTimeout(timer); resolve();
    } });
  });
  await consumer.disconnect();
}
main().catch((e) => { console.error(e.message); process.exit(1); });
