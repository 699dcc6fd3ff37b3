'use strict';
// Mint linkedge tracked links: clicks, open pixels and traps (README, "Link format").
// Node's standard library only (crypto); ids are BigInt or safe integers. The same bytes as
// linkedge's own minting: checked against tests/vectors/tokens.json by test.js.
//
//   const { Minter } = require('./linkedge-links');
//   let key = fs.readFileSync('/etc/linkedge/link-key-1'); // bytes, as linkedge reads them
//   while (key.length && (key[key.length - 1] === 0x0a || key[key.length - 1] === 0x0d)) key = key.subarray(0, -1);
//   const m = new Minter(1, key);
//   const url = m.click('link.example.com', 'https://example.com/', { workspace: 7, message: 9, link: 1 });
const crypto = require('crypto');

const VERSION = 1;
const MAX_URL_LEN = 2048;
const MIN_SECRET_LEN = 32;
const KINDS = { click: 1, open: 2, trap: 3 };
const U64 = (1n << 64n) - 1n;

function varint(out, value, name) {
  // A bigint, or a Number that is an exact integer: 2**53 + 1 as a Number is already 2**53.
  if (!(typeof value === 'bigint' || Number.isSafeInteger(value))) {
    throw new RangeError(`${name} must be a BigInt or a safe integer (pass BigInt above 2^53), not ${String(value)}`);
  }
  let n = BigInt(value);
  if (n < 0n || n > U64) throw new RangeError(`${name} ${n} is not between 0 and 2^64-1`);
  while (n >= 0x80n) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
}

/** True when linkedge redirects to `url`: an absolute http(s) URL with a host, at most 2048
 * bytes, without spaces or control characters. */
function validDestination(url) {
  const b = Buffer.from(url, 'utf8');
  // A lone surrogate would be minted as U+FFFD: another destination than the one asked for.
  if (b.toString('utf8') !== url) return false;
  if (b.length > MAX_URL_LEN || b.some((c) => c <= 0x20 || c === 0x7f)) return false;
  const lower = b.subarray(0, 8).toString('latin1').toLowerCase();
  let rest;
  if (lower.startsWith('https://')) rest = b.subarray(8);
  else if (lower.startsWith('http://')) rest = b.subarray(7);
  else return false;
  let end = rest.length;
  for (const c of [0x2f, 0x3f, 0x23]) {
    const i = rest.indexOf(c);
    if (i >= 0 && i < end) end = i;
  }
  const authority = rest.subarray(0, end);
  const host = authority.subarray(authority.lastIndexOf(0x40) + 1);
  return host.length > 0 && host[0] !== 0x3a && authority.indexOf(0x5c) < 0;
}

function checkHost(host) {
  if (typeof host === 'string' && host.length > 0 && host.length <= 253) {
    if (/^\[[0-9a-f:.]+\]$/.test(host) && host.includes(':')) return;
    if (/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(host)) return;
  }
  throw new RangeError(`host ${JSON.stringify(host)} must be a normalised host name: lowercase, no port, no trailing dot`);
}

class Minter {
  /** Mints with one key of linkedge's keyring (`links.keys` in its config: the same id and
   * secret bytes). */
  constructor(keyId, secret, scheme = 'https') {
    this.secret = Buffer.isBuffer(secret) ? secret : Buffer.from(secret, 'utf8');
    if (this.secret.length < MIN_SECRET_LEN) {
      throw new RangeError(`secret is ${this.secret.length} bytes; at least ${MIN_SECRET_LEN} are required`);
    }
    if (!(Number.isInteger(keyId) && keyId >= 0 && keyId <= 0xffffffff)) {
      throw new RangeError('keyId must be between 0 and 2^32-1');
    }
    this.keyId = keyId;
    this.scheme = scheme;
  }

  /** The token alone; `kind` is 'click', 'open' or 'trap'. */
  token(host, kind, { workspace, message, link = 0, issued, url = '' }) {
    checkHost(host);
    if (!(kind in KINDS)) throw new RangeError(`kind must be click, open or trap, not ${kind}`);
    if (kind === 'open') {
      if (url) throw new RangeError('an open pixel carries no destination');
    } else if (!validDestination(url)) {
      throw new RangeError(`url must be an absolute http:// or https:// URL with a host, without spaces or control characters, at most ${MAX_URL_LEN} bytes`);
    }
    if (issued === undefined) issued = Math.floor(Date.now() / 1000);
    const u = Buffer.from(url, 'utf8');
    const bytes = [VERSION, KINDS[kind]];
    varint(bytes, this.keyId, 'keyId');
    varint(bytes, workspace, 'workspace');
    varint(bytes, message, 'message');
    varint(bytes, link, 'link');
    varint(bytes, issued, 'issued');
    varint(bytes, u.length, 'url length');
    const payload = Buffer.concat([Buffer.from(bytes), u]);
    const check = crypto.createHmac('sha256', this.secret).update(Buffer.from([1])).update(payload).digest().subarray(0, 4);
    const signed = Buffer.concat([payload, check]);
    const mac = crypto
      .createHmac('sha256', this.secret)
      .update(Buffer.from([2]))
      .update(Buffer.from(host, 'ascii'))
      .update(Buffer.from([0]))
      .update(signed)
      .digest()
      .subarray(0, 16);
    return Buffer.concat([signed, mac]).toString('base64url');
  }

  /** A tracked click link to `url`. */
  click(host, url, ids) {
    return `${this.scheme}://${host}/c/${this.token(host, 'click', { ...ids, url })}`;
  }

  /** A trap: a click link to hide in the email, followed by scanners, never by a person. */
  trap(host, url, ids) {
    return `${this.scheme}://${host}/c/${this.token(host, 'trap', { ...ids, url })}`;
  }

  /** An open-pixel URL (no destination). */
  open(host, ids) {
    return `${this.scheme}://${host}/o/${this.token(host, 'open', { ...ids, url: '' })}`;
  }
}

module.exports = { Minter, validDestination, MAX_URL_LEN };
