/**
 * A bounded wait: `promise`'s value, or undefined once `ms` have passed (a rejection of `promise`
 * rejects). The timer is cleared either way, so a bounded wait never holds the process.
 */
export async function settledWithin<T> (promise: PromiseLike<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<undefined>((resolve) => { timer = setTimeout(() => { resolve(undefined) }, ms) })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}
