// The GGUF container (version 3, llama.cpp's model file), written in one pass:
//
//   "GGUF" u32 version  u64 tensor_count  u64 kv_count
//   kv_count x   { string key, u32 value_type, value }
//   tensor_count x { string name, u32 n_dims, u64 dims[n_dims] (innermost first), u32 ggml_type, u64 offset }
//   zero padding to the alignment (32), then each tensor's bytes at its offset (each offset aligned)
//
// Strings are u64 length + UTF-8 bytes; arrays are u32 element type + u64 count + elements; all
// little-endian. Tensor data is produced one tensor at a time (`bytes()`), so a 7B model is never
// held in memory whole, and the file is written atomically (src/io/atomic.ts).
import { writeFileStreamed } from '../io/atomic.js';
import type { GgufTensorType } from '../native/types.js';

export const GGUF_ALIGNMENT = 32;

/** gguf-py's GGUFValueType. */
const VT = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;

/** ggml_type ids (gguf-py's GGMLQuantizationType). */
export const GGML_TYPE: Record<GgufTensorType, number> = { f32: 0, f16: 1, q5_0: 6, q8_0: 8, q4_K: 12, q6_K: 14 };

export type GgufValue =
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'string[]'; value: string[] }
  | { type: 'f32[]'; value: ArrayLike<number> }
  | { type: 'i32[]'; value: ArrayLike<number> };

export interface GgufTensor {
  name: string;
  /** ggml order: innermost (a row's length) first, i.e. the reverse of PyTorch's shape. */
  dims: number[];
  type: GgufTensorType;
  /** Exactly `byteLength` bytes, produced when the writer reaches this tensor. */
  bytes: () => Promise<Uint8Array>;
  byteLength: number;
}

/** Appends little-endian values to a growing buffer (the header: metadata and tensor table). */
class Bytes {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u32(v: number): void { this.room(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number): void { this.room(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  f32(v: number): void { this.room(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  u64(v: number): void { this.room(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  u8(v: number): void { this.room(1); this.buf[this.length++] = v; }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  pad(to: number): void { while (this.length % to) this.u8(0); }
  bytes(): Uint8Array { return this.buf.subarray(0, this.length); }
}

function putValue(b: Bytes, v: GgufValue): void {
  switch (v.type) {
    case 'u32': b.u32(VT.u32); b.u32(v.value); return;
    case 'i32': b.u32(VT.i32); b.i32(v.value); return;
    case 'f32': b.u32(VT.f32); b.f32(v.value); return;
    case 'bool': b.u32(VT.bool); b.u8(v.value ? 1 : 0); return;
    case 'string': b.u32(VT.string); b.str(v.value); return;
    case 'string[]': b.u32(VT.array); b.u32(VT.string); b.u64(v.value.length); for (const s of v.value) b.str(s); return;
    case 'f32[]': b.u32(VT.array); b.u32(VT.f32); b.u64(v.value.length); for (let i = 0; i < v.value.length; i++) b.f32(v.value[i]); return;
    case 'i32[]': b.u32(VT.array); b.u32(VT.i32); b.u64(v.value.length); for (let i = 0; i < v.value.length; i++) b.i32(v.value[i]); return;
  }
}

const padTo = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Writes the file atomically; returns its size and where the tensor data begins. `onTensor` sees
 *  each tensor as it is written. */
export async function writeGguf(file: string, metadata: [string, GgufValue][], tensors: GgufTensor[], onTensor?: (t: GgufTensor, i: number) => void): Promise<{ bytes: number; dataOffset: number }> {
  const seen = new Set<string>();
  for (const [k] of metadata) {
    if (seen.has(k)) throw new Error(`GGUF metadata key ${k} given twice`);
    seen.add(k);
  }
  const h = new Bytes();
  h.u32(0x46554747);  // "GGUF" read as a little-endian u32
  h.u32(3);
  h.u64(tensors.length);
  h.u64(metadata.length);
  for (const [k, v] of metadata) {
    h.str(k);
    putValue(h, v);
  }
  let offset = 0;
  for (const t of tensors) {
    h.str(t.name);
    h.u32(t.dims.length);
    for (const d of t.dims) h.u64(d);
    h.u32(GGML_TYPE[t.type]);
    h.u64(offset);
    offset = padTo(offset + t.byteLength, GGUF_ALIGNMENT);
  }
  h.pad(GGUF_ALIGNMENT);
  const header = h.bytes();
  const total = header.length + offset;
  const zeros = new Uint8Array(GGUF_ALIGNMENT);
  await writeFileStreamed(file, total, async (put) => {
    put(header);
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const data = await t.bytes();
      if (data.byteLength !== t.byteLength) throw new Error(`GGUF tensor ${t.name}: ${data.byteLength} bytes, ${t.byteLength} planned`);
      put(data);
      const pad = padTo(t.byteLength, GGUF_ALIGNMENT) - t.byteLength;
      if (pad) put(zeros.subarray(0, pad));
      onTensor?.(t, i);
    }
  });
  return { bytes: total, dataOffset: header.length };
}
