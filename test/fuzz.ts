/**
 * Fuzzing helpers: a seeded generator (the same inputs every run, so a failure reproduces) and
 * makers of the inputs the fuzz tests throw at the plugin.
 */

/** mulberry32: `next(n)` is an integer in [0, n), the same sequence for the same seed. */
export function random (seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 4294967296) * n)
  }
}

/** `length` random bytes. */
export function bytes (next: (n: number) => number, length: number): Buffer {
  const buffer = Buffer.alloc(length)
  for (let i = 0; i < length; i++) buffer[i] = next(256)
  return buffer
}

/** One of `choices`. */
export function pick<T> (next: (n: number) => number, choices: readonly T[]): T {
  return choices[next(choices.length)]!
}

/** A copy of `input` with a few bytes changed, cut or inserted. */
export function mutate (next: (n: number) => number, input: Buffer): Buffer {
  let out = Buffer.from(input)
  const edits = 1 + next(4)
  for (let i = 0; i < edits; i++) {
    const at = next(out.length + 1)
    switch (next(3)) {
      case 0: if (out.length > 0) out[Math.min(at, out.length - 1)] = next(256); break
      case 1: out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + next(8))]); break
      default: out = Buffer.concat([out.subarray(0, at), bytes(next, 1 + next(8)), out.subarray(at)])
    }
  }
  return out
}
