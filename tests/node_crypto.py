"""jambonz's own password scheme, run by Node: the cross-check that needs no sipwatch code.

The script is the algorithm of jambonz-api-server ``lib/utils/encrypt-decrypt.js`` (and
@jambonz/digest-utils ``utils.js``, which the registrar uses to decrypt): the key is the
first 32 characters of base64(sha256(ENCRYPTION_SECRET || JWT_SECRET)), AES-256-CBC
(AES-256-CTR with LEGACY_CRYPTO), stored as JSON.stringify({iv, content}).
"""

from __future__ import annotations

import subprocess

NODE_SCRIPT = r"""
const crypto = require('crypto');
const [mode, secret, legacy, data] = process.argv.slice(1);
const algorithm = legacy === '1' ? 'aes-256-ctr' : 'aes-256-cbc';
const secretKey = crypto.createHash('sha256').update(secret).digest('base64').substring(0, 32);
if (mode === 'encrypt') {
  const iv = crypto.randomBytes(16);
  const cipher = crypto.createCipheriv(algorithm, secretKey, iv);
  const encrypted = Buffer.concat([cipher.update(data), cipher.final()]);
  process.stdout.write(JSON.stringify({iv: iv.toString('hex'), content: encrypted.toString('hex')}));
} else {
  const hash = JSON.parse(data);
  const decipher = crypto.createDecipheriv(algorithm, secretKey, Buffer.from(hash.iv, 'hex'));
  const out = Buffer.concat([decipher.update(Buffer.from(hash.content, 'hex')), decipher.final()]);
  process.stdout.write(out.toString());
}
"""


def node(
    mode: str, secret: str, data: str, legacy: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the scheme: ``mode`` is "encrypt" (data = plaintext) or "decrypt" (data = stored)."""
    return subprocess.run(
        ["node", "-e", NODE_SCRIPT, mode, secret, "1" if legacy else "0", data],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
