// The contract's shared expectations (fixtures/expectations/) through jco:
// the same files tests/contract.rs runs through wasmtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { sync } from './out/crmsync_plugin.js';
import { setDirectory } from './directory.js';

const root = new URL('../../', import.meta.url);
const cases = (file) => JSON.parse(readFileSync(new URL(`fixtures/expectations/${file}`, root), 'utf8'));
const opt = (value) => (value == null ? undefined : value);

function target(value) {
  return typeof value === 'string' ? { tag: value } : { tag: 'custom', val: value.custom };
}

function errorJson(error) {
  return {
    category: error.category,
    retryable: error.retryable,
    retry_after_ms: error.retryAfterMs === undefined ? null : Number(error.retryAfterMs),
    scope: error.scope,
  };
}

test('map-fields meets the shared expectations', () => {
  for (const c of cases('map-fields.json')) {
    const record = {
      id: c.record.id,
      properties: Object.entries(c.record.properties).map(([name, value]) => ({ name, value: opt(value) })),
      mergedIds: [],
      companyIds: [],
    };
    const mappings = c.mappings.map(([source, t]) => ({ source, target: target(t), valueType: { tag: 'text' } }));
    const mapped = sync.mapFields(record, mappings).contact;
    assert.deepEqual(
      {
        external_id: mapped.externalId,
        name: mapped.name ?? null,
        emails: mapped.emails,
        phones: mapped.phones,
        fields: Object.fromEntries(mapped.fields.map((f) => [f.name, f.value.val])),
      },
      c.expect,
      c.name,
    );
  }
});

// A case's directory as the component sees it: an entry linked to a source
// record was created by the sync, so its handles are the ones it brought.
function caseDirectory(c) {
  return c.directory.map((d) => ({
    id: d.id,
    externalId: opt(d.external_id),
    emails: d.emails,
    phones: d.phones,
    fromSource: d.external_id == null ? [] : [...d.emails, ...d.phones],
  }));
}

function mappedContact(contact) {
  return { externalId: contact.external_id, name: undefined, emails: contact.emails, phones: contact.phones, domains: [], fields: [] };
}

function outcomeJson(outcome) {
  return outcome.tag === 'skip'
    ? { outcome: 'skip', category: outcome.val.category }
    : outcome.tag === 'create'
      ? { outcome: 'create' }
      : { outcome: outcome.tag, id: outcome.val };
}

test('match-contact meets the shared expectations', () => {
  for (const c of cases('match-contact.json')) {
    setDirectory(caseDirectory(c));
    assert.deepEqual(outcomeJson(sync.matchContact(mappedContact(c.contact))), c.expect, c.name);
  }
});

test('match-page meets the shared expectations', () => {
  for (const c of cases('match-page.json')) {
    setDirectory(caseDirectory(c));
    const outcomes = sync.matchPage(c.contacts.map(mappedContact));
    assert.deepEqual(outcomes.map(outcomeJson), c.expect, c.name);
  }
});

// A page packed as `page-keys` (what the runner sends): the same outcomes.
function packKeys(contacts) {
  const utf8 = new TextEncoder();
  const [bytes, ends, counts] = [[], [], []];
  for (const c of contacts) {
    counts.push(c.emails.length, c.phones.length, c.domains.length);
    for (const key of [c.externalId, ...c.emails, ...c.phones, ...c.domains]) {
      bytes.push(...utf8.encode(key));
      ends.push(bytes.length);
    }
  }
  return { text: new Uint8Array(bytes), ends: new Uint32Array(ends), counts: new Uint32Array(counts) };
}

test('match-keys-page decides as match-page does', () => {
  for (const c of cases('match-page.json')) {
    setDirectory(caseDirectory(c));
    const outcomes = sync.matchKeysPage(packKeys(c.contacts.map(mappedContact)));
    assert.deepEqual(outcomes.map(outcomeJson), c.expect, c.name);
  }
});

function counterparts(list) {
  return (list ?? []).map((c) => ({ id: c.id, handles: c.handles, linked: c.linked }));
}

function pairingJson(pairing) {
  switch (pairing.tag) {
    case 'linked':
      return { pairing: 'linked', counterpart_id: pairing.val.counterpartId ?? null, resume: pairing.val.resume };
    case 'paired':
      return { pairing: 'paired', id: pairing.val };
    case 'look-up':
      return { pairing: 'look-up', handle: pairing.val ?? null };
    case 'rejected':
      return { pairing: 'rejected', category: pairing.val.category };
    default:
      return { pairing: pairing.tag };
  }
}

test('pairing across CRMs meets the shared expectations', () => {
  for (const c of cases('pairing.json')) {
    const rules = c.rules && { side: c.rules.side, companies: c.rules.companies, handleMapped: c.rules.handle_mapped };
    let got;
    if (c.call === 'pair-read') {
      const records = c.records.map((r) => ({
        id: r.id,
        handles: r.handles,
        link: r.link == null ? undefined : {
          counterpartId: opt(r.link.counterpart_id),
          syncing: r.link.syncing,
          stoppedBy: opt(r.link.stopped_by),
        },
        readCounterparts: counterparts(r.read_counterparts),
      }));
      got = sync.pairRead(rules, records).map(pairingJson);
    } else if (c.call === 'pair-looked-up') {
      const records = c.records.map((r) => ({ id: r.id, handles: r.handles }));
      got = sync.pairLookedUp(rules, records, counterparts(c.found), c.taken).map(pairingJson);
    } else {
      got = sync.foldMerges(c.records).map((id) => id ?? null);
    }
    assert.deepEqual(got, c.expect, c.name);
  }
});

test('classify-error meets the shared expectations', () => {
  for (const c of cases('classify-error.json')) {
    const [kind, value] = Object.entries(c.failure)[0];
    const failure = kind === 'http'
      ? { tag: 'http', val: { status: value.status, retryAfter: opt(value.retry_after), body: value.body } }
      : kind === 'handle_taken'
        ? { tag: 'handle-taken', val: { recordId: value.record_id, kind: value.kind, handle: value.handle, ownerExternalId: value.owner_external_id } }
        : { tag: kind.replaceAll('_', '-'), val: value };
    const error = sync.classifyError(failure);
    assert.deepEqual(errorJson(error), c.expect, c.name);
    assert.ok(error.message && error.resolution, c.name);
  }
});

async function replayServer(cassette) {
  const child = spawn(process.execPath, [new URL('replay-server.mjs', import.meta.url).pathname,
    new URL(`fixtures/hubspot/${cassette}`, root).pathname], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = await once(child.stdout, 'data');
  return { child, baseUrl: `http://127.0.0.1:${String(chunk).trim()}` };
}

test('fetch-page meets the shared expectations', async () => {
  for (const c of cases('fetch-page.json')) {
    const { child, baseUrl } = await replayServer(c.cassette);
    try {
      const source = {
        tag: 'hubspot-contacts',
        val: {
          baseUrl,
          scope: c.source.list_id == null ? { tag: 'all' } : { tag: 'list-members', val: c.source.list_id },
          properties: c.source.properties,
          filters: [],
          withCompanies: false,
        },
      };
      let got;
      try {
        const page = sync.fetchPage(source, opt(c.cursor));
        got = { ids: page.records.map((r) => r.id), next_cursor: page.nextCursor ?? null };
      } catch (e) {
        got = { error: e.payload.category };
      }
      assert.deepEqual(got, c.expect, c.name);
    } finally {
      child.kill();
    }
  }
});
