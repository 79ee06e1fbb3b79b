// Strict UTF-8 for the files users hand us. Buffer.toString('utf8') and readFileSync(f, 'utf8') turn
// bytes that are not UTF-8 into U+FFFD without a word, so a damaged tensor name or question would be
// read as different text; these refuse instead, and say where.

const fatal = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The text of `bytes` (a byte-order mark kept), or the offset of the first byte that is not UTF-8. */
export function strictUtf8(bytes: Uint8Array): { text: string } | { badByte: number } {
  try {
    return { text: fatal.decode(bytes) };
  } catch {
    return { badByte: firstInvalidByte(bytes) };
  }
}

// Only on the error path: the lossy decoding is correct up to its first replacement character, so the
// byte length of the text before it is where the bad byte lies (unless the file held a real U+FFFD there).
function firstInvalidByte(bytes: Uint8Array): number {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  let byte = 0;
  let from = 0;
  for (let k = text.indexOf('\ufffd'); k >= 0; k = text.indexOf('\ufffd', k + 1)) {
    byte += Buffer.byteLength(text.slice(from, k));
    if (!(bytes[byte] === 0xef && bytes[byte + 1] === 0xbf && bytes[byte + 2] === 0xbd)) return byte;
    byte += 3;
    from = k + 1;
  }
  return bytes.length; // not reached for bytes the fatal decoder refused
}

/** "byte 0xff at byte offset 12" for messages. */
export function describeBadByte(bytes: Uint8Array, at: number, unit = 'byte offset'): string {
  const b = bytes[at];
  return b === undefined ? `a cut sequence at the end` : `byte 0x${b.toString(16).padStart(2, '0')} at ${unit} ${at}`;
}
