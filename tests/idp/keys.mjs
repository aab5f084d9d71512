#!/usr/bin/env node
// Generates a JWKS with private keys for the test identity provider.
//
//   node keys.mjs [--out FILE] SPEC [SPEC...]
//
// SPEC is ALG or ALG:KID, ALG one of RS256 (RSA-2048), PS256 (RSA-2048), ES256 (P-256),
// ES384 (P-384), EdDSA (Ed25519). Without a KID one is made up from the algorithm and random
// bytes. Keys come out in the order given; the test IdP signs with the first one. Without
// --out the JWKS is printed on stdout.
//
// Uses only node:crypto, so it runs without `npm ci`.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const KEYGEN = {
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  PS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  ES384: () => generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  EdDSA: () => generateKeyPairSync('ed25519'),
};

export function makeKey(alg, kid) {
  const gen = KEYGEN[alg];
  if (!gen) throw new Error(`unsupported algorithm ${alg} (use one of ${Object.keys(KEYGEN).join(', ')})`);
  const { privateKey } = gen();
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    ...jwk,
    kid: kid || `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`,
    alg,
    use: 'sig',
  };
}

function usage(msg) {
  if (msg) process.stderr.write(`keys.mjs: ${msg}\n`);
  process.stderr.write('usage: node keys.mjs [--out FILE] ALG[:KID] [ALG[:KID]...]\n');
  process.exit(2);
}

function main(argv) {
  let out;
  const specs = [];
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--out') {
      out = argv[i + 1];
      if (!out) usage('--out needs a file');
      i += 1;
    } else if (a === '-h' || a === '--help') {
      usage();
    } else if (a.startsWith('-')) {
      usage(`unknown option ${a}`);
    } else {
      specs.push(a);
    }
  }
  if (specs.length === 0) usage('no key given');
  const keys = specs.map((spec) => {
    const i = spec.indexOf(':');
    return i < 0 ? makeKey(spec) : makeKey(spec.slice(0, i), spec.slice(i + 1));
  });
  const text = `${JSON.stringify({ keys }, null, 2)}\n`;
  if (out) writeFileSync(out, text, { mode: 0o600 });
  else process.stdout.write(text);
}

main(process.argv.slice(2));
