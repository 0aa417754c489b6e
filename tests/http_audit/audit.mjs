// The graphql-http server audits (GraphQL over HTTP) against a running /graphql endpoint.
//
//   node audit.mjs http://127.0.0.1:8000/graphql
//
// Prints one line per audit: "<status> <id> <name>", with the reason when it did not pass
// (status: ok; notice for a MAY, warn for a SHOULD, error for a MUST not met), then a summary
// line. Exits 1 when any audit warns or errs, 2 when it could not run.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <url of the /graphql endpoint>');
  process.exit(2);
}

const results = await auditServer({ url });
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const result of results) {
  counts[result.status] += 1;
  const reason = result.status === 'ok' ? '' : ` -- ${String(result.reason).replace(/\s+/g, ' ')}`;
  console.log(`${result.status} ${result.id} ${result.name}${reason}`);
}
console.log(
  `summary ok=${counts.ok} notice=${counts.notice} warn=${counts.warn} error=${counts.error}`,
);
process.exit(counts.warn + counts.error > 0 ? 1 : 0);
