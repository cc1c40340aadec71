/**
 * What `maxConnectionsPerIp` counts as one client: an IPv4 address, or an IPv6 network of
 * `subnet` bits (a single host is usually given a whole /64, so counting full IPv6 addresses
 * would give one client 2^64 allowances; rate limiters group the same way).
 */
import { isIPv6 } from 'node:net'

export const DEFAULT_IPV6_SUBNET = 64

export function clientKey (ip: string, subnet: number): string {
  if (!isIPv6(ip)) return ip
  const words = ipv6Words(ip)
  // IPv4-mapped (::ffff:a.b.c.d): the IPv4 client it is.
  if (words.slice(0, 5).every((word) => word === 0) && words[5] === 0xffff) {
    return `${words[6]! >> 8}.${words[6]! & 0xff}.${words[7]! >> 8}.${words[7]! & 0xff}`
  }
  let key = ''
  for (let bit = 0; bit < subnet; bit += 16) {
    const word = words[bit / 16]!
    const kept = Math.min(16, subnet - bit)
    key += (word >> (16 - kept) << (16 - kept)).toString(16) + ':'
  }
  return `${key}:/${subnet}`
}

/** The eight 16-bit words of a valid IPv6 address (zone dropped, an embedded IPv4 tail converted). */
function ipv6Words (ip: string): number[] {
  let address = ip.split('%')[0]!
  const ipv4Tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address)
  if (ipv4Tail !== null) {
    const [a, b, c, d] = ipv4Tail.slice(1).map(Number) as [number, number, number, number]
    address = address.slice(0, ipv4Tail.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = address.split('::') as [string, string | undefined]
  const parse = (part: string | undefined): number[] => part === undefined || part === '' ? [] : part.split(':').map((word) => parseInt(word, 16))
  const first = parse(head)
  if (tail === undefined) return first
  const last = parse(tail)
  return [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last]
}
