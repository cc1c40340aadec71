/**
 * What `maxConnectionsPerIp` counts as one client: an IPv4 address (IPv4-mapped IPv6 included),
 * or an IPv6 network of `subnet` bits (a single host is usually given a whole /64, so counting
 * full IPv6 addresses would give one client 2^64 allowances; rate limiters group the same way).
 * Addresses are parsed by ipaddr.js, which Fastify's own proxy-addr uses.
 */
import ipaddr from 'ipaddr.js'

export const DEFAULT_IPV6_SUBNET = 64

export function clientKey (ip: string, subnet: number): string {
  if (!ipaddr.isValid(ip)) return ip // '' (no socket address: injectWS) or whatever a proxy header said
  const address = ipaddr.process(ip) // an IPv4-mapped IPv6 address becomes its IPv4 address
  if (address.kind() === 'ipv4') return address.toString()
  const parts = (address as ipaddr.IPv6).parts.map((part, i) => {
    const kept = Math.min(16, Math.max(0, subnet - i * 16))
    return kept === 0 ? 0 : part >> (16 - kept) << (16 - kept)
  })
  return `${new ipaddr.IPv6(parts).toString()}/${subnet}` // without the zone: fe80::1%eth0 is fe80::1
}
