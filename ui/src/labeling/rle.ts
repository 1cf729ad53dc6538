// The reference API's run-length encoding of one label's area (Label Studio's brush format, as
// plugins/patient_ml/labels/rle.py reads and writes it): a bit stream over the flattened RGBA
// image (height x width x 4 values), a pixel in the area having 255 in all four channels.

const FIELD_SIZES = [3, 4, 8, 16];
const MAX_RUN = 2 ** 16;

class BitWriter {
  private bytes: number[] = [];
  private current = 0;
  private filled = 0;

  write(value: number, bits: number): void {
    for (let i = bits - 1; i >= 0; i--) {
      // division, not >>: counts may exceed 31 bits of a signed shift
      const bit = Math.floor(value / 2 ** i) % 2;
      this.current = (this.current << 1) | bit;
      this.filled++;
      if (this.filled === 8) {
        this.bytes.push(this.current);
        this.current = 0;
        this.filled = 0;
      }
    }
  }

  finish(): number[] {
    // 1..8 zero bits up to a whole byte, as the reference encoder always adds
    this.write(0, 8 - this.filled);
    return this.bytes;
  }
}

function writeRun(out: BitWriter, length: number, word: number): void {
  while (length > MAX_RUN) {
    out.write(0b111, 3);
    out.write(MAX_RUN - 1, 16);
    out.write(word, 8);
    length -= MAX_RUN;
  }
  if (length === 1) {
    out.write(0b000, 3);
    out.write(0, 3);
    out.write(word, 8);
    return;
  }
  const field = length <= 8 ? 0 : length <= 16 ? 1 : length <= 256 ? 2 : 3;
  out.write(0b100 | field, 3);
  out.write(length - 1, FIELD_SIZES[field]);
  out.write(word, 8);
}

/** The RLE bytes of the area where `inside(pixel)` holds, over `pixels` pixels. */
export function encodeArea(pixels: number, inside: (pixel: number) => boolean): number[] {
  const out = new BitWriter();
  out.write(pixels * 4, 32);
  out.write(7, 5); // 8-bit words
  for (const size of FIELD_SIZES) out.write(size - 1, 4);
  let start = 0;
  while (start < pixels) {
    const state = inside(start);
    let end = start + 1;
    while (end < pixels && inside(end) === state) end++;
    writeRun(out, (end - start) * 4, state ? 255 : 0);
    start = end;
  }
  return out.finish();
}

/** The pixels (by their alpha value) an area's RLE covers: 1 inside, 0 outside. */
export function decodeArea(rle: number[], pixels: number): Uint8Array {
  let pos = 0;
  const total = rle.length * 8;
  const read = (n: number): number => {
    if (pos + n > total) throw new Error("the RLE bit stream ends too early");
    let value = 0;
    for (let i = 0; i < n; i++, pos++) value = value * 2 + ((rle[pos >> 3] >> (7 - (pos & 7))) & 1);
    return value;
  };
  const count = read(32);
  if (count !== pixels * 4) throw new Error(`the RLE holds ${count} values, not ${pixels * 4}`);
  const word = read(5) + 1;
  if (word !== 8) throw new Error(`word size ${word} bits; only 8 is supported`);
  const sizes = [0, 1, 2, 3].map(() => read(4) + 1);
  const out = new Uint8Array(pixels);
  let i = 0;
  const put = (value: number) => {
    if ((i & 3) === 3 && value) out[i >> 2] = 1; // the alpha channel
    i++;
  };
  while (i < count) {
    const repeated = read(1);
    const n = read(sizes[read(2)]) + 1;
    if (i + n > count) throw new Error("a run goes past the end of the mask");
    if (repeated) {
      const value = read(8);
      for (let k = 0; k < n; k++) put(value);
    } else {
      for (let k = 0; k < n; k++) put(read(8));
    }
  }
  return out;
}
