'use strict';
// Runs tests/vectors/tokens.json through linkedge-links.js: node --test clients/node/
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const path = require('path');
const { Minter, validDestination } = require('./linkedge-links');

// JSON numbers above 2^53 lose precision in JSON.parse: the ids are read as strings, then BigInt.
const text = fs
  .readFileSync(path.join(__dirname, '..', '..', 'tests', 'vectors', 'tokens.json'), 'utf8')
  .replace(/("(?:workspace|message|link|issued)": )(\d+)/g, '$1"$2"');
const file = JSON.parse(text);
const keys = new Map(file.keys.map((k) => [k.id, k.secret]));

test('every valid vector mints its token', () => {
  assert.ok(file.valid.length >= 30);
  for (const c of file.valid) {
    const m = new Minter(c.key_id, keys.get(c.key_id));
    const ids = { workspace: BigInt(c.workspace), message: BigInt(c.message), link: BigInt(c.link), issued: BigInt(c.issued) };
    const got = c.kind === 'open' ? m.open(c.host, ids) : m[c.kind](c.host, c.url, ids);
    assert.strictEqual(got, c.tracked_url, c.name);
  }
});

test('refuses what linkedge refuses', () => {
  const m = new Minter(1, keys.get(1));
  const ids = { workspace: 1, message: 2 };
  for (const url of ['javascript:alert(1)', '/relative', 'https://e.com/a b', 'https:///x', 'https://e.com/\udcff', 'https://e.com/' + 'x'.repeat(2048)]) {
    assert.strictEqual(validDestination(url), false, url);
    assert.throws(() => m.click('link.example.com', url, ids), RangeError, url);
  }
  for (const host of ['Link.example.com', 'link.example.com.', 'link.example.com:443', '', '[' + '0:'.repeat(130) + '1]']) {
    assert.throws(() => m.click(host, 'https://example.com/', ids), RangeError, host);
  }
  assert.throws(() => m.click('link.example.com', 'https://example.com/', { workspace: -1, message: 2 }), RangeError);
  assert.throws(() => m.click('link.example.com', 'https://example.com/', { workspace: 1n << 64n, message: 2 }), RangeError);
  assert.throws(() => new Minter(1, 'short'), RangeError);
  // Ids past 2^53 as Numbers are already rounded: refused, not minted wrong.
  for (const bad of [2 ** 53 + 2, 1.5, '7', true, '']) {
    assert.throws(() => m.click('link.example.com', 'https://example.com/', { workspace: bad, message: 2 }), RangeError, String(bad));
  }
});
