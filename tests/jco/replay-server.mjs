// Serves a crmsync cassette over HTTP on 127.0.0.1 (a free port, printed on
// stdout). It runs in its own process because preview2-shim's HTTP client
// blocks the test's thread while the component waits for an answer.
// Replay follows host/src/cassette.rs: the first unused matching exchange,
// then the last matching one again.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';

const cassette = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const used = cassette.exchanges.map(() => false);

function answer(method, url, body) {
  let parsed;
  try {
    parsed = body.length ? JSON.parse(body) : undefined;
  } catch {
    parsed = undefined;
  }
  const matching = cassette.exchanges
    .map((exchange, index) => ({ exchange, index }))
    .filter(({ exchange: { request } }) =>
      request.method.toUpperCase() === method &&
      request.url === url &&
      (request.body == null || isDeepStrictEqual(request.body, parsed)));
  const pick = matching.find(({ index }) => !used[index]) ?? matching.at(-1);
  if (!pick) return undefined;
  used[pick.index] = true;
  return pick.exchange.response;
}

const server = createServer((req, res) => {
  let body = '';
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    const response = answer(req.method, req.url, body);
    if (!response) {
      res.writeHead(599, { 'content-type': 'text/plain' }).end(`no recorded response for ${req.method} ${req.url}`);
      return;
    }
    const headers = { ...(response.headers ?? {}) };
    let text = response.body_text ?? '';
    if (response.body != null) {
      text = JSON.stringify(response.body);
      headers['content-type'] ??= 'application/json';
    }
    res.writeHead(response.status, headers).end(text);
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
