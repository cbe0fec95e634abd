// fhir-kit-client against a running server: create, read, update, search (GET and POST _search)
// with _include and nextPage until the last page, and a transaction Bundle.
// Usage: node crud_search_transaction.mjs <FHIR base URL>
// Prints one JSON object on stdout; on a failed request, {"error": ..., "status": ..., "data": ...}.
import { Client } from 'fhir-kit-client';

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.error('usage: node crud_search_transaction.mjs <FHIR base URL>');
  process.exit(2);
}
const client = new Client({ baseUrl });
const LOINC = 'http://loinc.org';

const child = (family) => ({
  resourceType: 'Patient', name: [{ family, given: ['Amara'] }], gender: 'female', birthDate: '2015-03-09',
});
const weight = (patientId, day) => ({
  resourceType: 'Observation', status: 'final',
  code: { coding: [{ system: LOINC, code: '29463-7' }] },
  subject: { reference: `Patient/${patientId}` },
  effectiveDateTime: `2025-03-${String(day).padStart(2, '0')}`,
  valueQuantity: { value: 20 + day, unit: 'kg' },
});
const summarise = (bundle) => ({
  type: bundle.type,
  total: bundle.total,
  matches: (bundle.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource.id),
  included: (bundle.entry ?? []).filter((e) => e.search?.mode === 'include')
    .map((e) => `${e.resource.resourceType}/${e.resource.id}`),
  hasNext: (bundle.link ?? []).some((l) => l.relation === 'next'),
});

async function allPages(first) {
  const pages = [];
  for (let page = first; page; page = await client.nextPage({ bundle: page })) {
    pages.push(summarise(page));
    if (pages.length > 20) throw new Error('more than 20 pages: the next links do not end');
  }
  return pages;
}

async function main() {
  const out = {};

  const created = await client.create({ resourceType: 'Patient', body: child('Okafor') });
  out.created = { id: created.id, versionId: created.meta?.versionId };

  const read = await client.read({ resourceType: 'Patient', id: created.id });
  out.read = { id: read.id, family: read.name[0].family, versionId: read.meta?.versionId };

  const updated = await client.update({ resourceType: 'Patient', id: read.id, body: { ...read, gender: 'male' } });
  out.updated = { id: updated.id, versionId: updated.meta?.versionId, gender: updated.gender };
  const reread = await client.read({ resourceType: 'Patient', id: created.id });
  out.reread = { versionId: reread.meta?.versionId, gender: reread.gender };

  const other = await client.create({ resourceType: 'Patient', body: child('Jones') });
  out.observations = [];
  for (let day = 1; day <= 5; day += 1) {
    out.observations.push((await client.create({ resourceType: 'Observation', body: weight(created.id, day) })).id);
  }
  await client.create({ resourceType: 'Observation', body: weight(other.id, 9) });

  const searchParams = {
    subject: `Patient/${created.id}`, code: `${LOINC}|29463-7`, _sort: '-date', _count: 2,
    _include: 'Observation:subject',
  };
  out.searchPages = await allPages(await client.search({ resourceType: 'Observation', searchParams }));
  out.postSearchPages = await allPages(
    await client.search({ resourceType: 'Observation', searchParams, options: { postSearch: true } }));

  const childUrn = 'urn:uuid:6f1c1f4e-3b9e-4c57-9a53-0d5f1b7f9e21';
  const transaction = await client.transaction({
    body: {
      resourceType: 'Bundle', type: 'transaction',
      entry: [
        { fullUrl: childUrn, resource: child('Mensah'), request: { method: 'POST', url: 'Patient' } },
        {
          resource: { resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: childUrn } },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    },
  });
  out.transaction = {
    type: transaction.type,
    statuses: transaction.entry.map((e) => e.response.status),
    locations: transaction.entry.map((e) => e.response.location),
  };
  const obsPath = transaction.entry[1].response.location.split('/_history/')[0];
  const [obsType, obsId] = obsPath.split('/').slice(-2);
  const obs = await client.read({ resourceType: obsType, id: obsId });
  out.transactionObservationSubject = obs.subject.reference;

  return out;
}

try {
  console.log(JSON.stringify(await main()));
} catch (err) {
  console.log(JSON.stringify({ error: err.message, status: err.response?.status, data: err.response?.data }));
  process.exitCode = 1;
}
