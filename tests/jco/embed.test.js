// The embedding guide's jco example (docs/embedding.md), kept honest by
// running it. Transpile once:
//   jco transpile crmsync_plugin.wasm -o out --map 'crmsync:sync/directory@0.8.0=../directory.js'
// then import the `sync` export; `directory.js` answers the component's lookups.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sync } from './out/crmsync_plugin.js';
import { setDirectory } from './directory.js';

test('a minimal jco host embeds the component', () => {
  // The platform's own contacts, with handles stored normalised.
  setDirectory([{ id: 'front-7', externalId: undefined, emails: ['ada@example.com'], phones: [] }]);

  const { contact: mapped, fieldErrors } = sync.mapFields(
    { id: '101', properties: [{ name: 'firstname', value: 'Ada' }, { name: 'email', value: ' ADA@example.com' }], mergedIds: [], companyIds: [] },
    [
      { source: 'firstname', target: { tag: 'first-name' }, valueType: { tag: 'text' } },
      { source: 'email', target: { tag: 'email' }, valueType: { tag: 'text' } },
    ],
  );
  assert.deepEqual(mapped.emails, ['ada@example.com']);
  assert.deepEqual(fieldErrors, []);

  // It shares a handle with an unlinked contact: link it (X3).
  assert.deepEqual(sync.matchContact(mapped), { tag: 'link', val: 'front-7' });

  // Failures become a category, retry advice and a resolution.
  const error = sync.classifyError({ tag: 'http', val: { status: 429, retryAfter: '2', body: '{}' } });
  assert.equal(error.category, 'rate-limited');
  assert.equal(error.retryAfterMs, 2000n);
});
