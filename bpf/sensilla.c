/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sensilla.c: the TC programs that decide every packet of a pod.
 *
 *   from_pod  on the host-side veth's TC ingress = the pod's egress  (DIR_EGRESS)
 *   to_pod    on the host-side veth's TC egress  = the pod's ingress (DIR_INGRESS)
 *
 * parse -> endpoint -> conntrack -> (identity, policy) -> verdict -> flow event.
 * Compiled once per agent by bcc; everything that differs between endpoints
 * lives in maps. Layouts: sensilla.h. Semantics: docs/datapath.md.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "sensilla.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "sensilla.c assumes a little-endian host"
#endif

#define NS_ETH_P_IP 0x0800
#define NS_ETH_P_ARP 0x0806
#define NS_ETH_P_IPV6 0x86DD

#define NS_IPPROTO_HOPOPTS 0
#define NS_IPPROTO_ICMP 1
#define NS_IPPROTO_TCP 6
#define NS_IPPROTO_UDP 17
#define NS_IPPROTO_ROUTING 43
#define NS_IPPROTO_FRAGMENT 44
#define NS_IPPROTO_ESP 50
#define NS_IPPROTO_AH 51
#define NS_IPPROTO_ICMPV6 58
#define NS_IPPROTO_NONE 59
#define NS_IPPROTO_DSTOPTS 60
#define NS_IPPROTO_SCTP 132

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define NS_ENOENT 2
#define NS_ENOSPC 28

#define NS_ETH_HLEN 14

#define PARSE_OK 0
#define PARSE_PASS 1 /* ARP, IPv6 neighbour discovery: always pass, no event */

#define bswap16(x) __builtin_bswap16(x)
#define bswap32(x) __builtin_bswap32(x)

struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip4_hdr {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__be16 csum;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ip6_hdr {
	__be32 vtcfl;
	__be16 plen;
	__u8 nexthdr;
	__u8 hlim;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* What the parser learnt about a packet. */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 isaddr[16]; /* ICMP errors: the embedded packet's tuple */
	__u8 idaddr[16];
	__u16 sport;
	__u16 dport;
	__u16 isport;
	__u16 idport;
	__u32 len;
	__u32 l3end;
	__u32 frag_id;
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 iproto;     /* embedded packet's protocol; 0: not an ICMP error */
	__u8 frag;       /* 1: a non-first fragment, 2: a first fragment */
	__u8 hlim;       /* IPv6 hop limit */
};

/* Per-CPU scratch space: keeps the 512-byte stack free. */
struct scratch {
	struct pkt p;
	struct ct_key k;
	struct ct_key rk;
	struct policy_key pk;
	struct ct_entry ne;
	struct flow_event ev;
	struct drop_key dk;
	struct frag_key fk;
	struct frag_value fv;
	struct ipcache6_key ik6;
	struct drop_state ds;
};

/* The per-CPU results of a policy decision. */
#define DECIDE_ALLOW 0
#define DECIDE_AUDIT 1
#define DECIDE_DENY 2
#define DECIDE_NO_CONFIG 3

BPF_TABLE("hash", __u32, struct endpoint_info, endpoints, ENDPOINTS_MAX);
BPF_F_TABLE("lpm_trie", struct ipcache4_key, struct ipcache_value, ipcache4, IPCACHE_MAX,
	    BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct ipcache6_key, struct ipcache_value, ipcache6, IPCACHE_MAX,
	    BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct policy_key, struct policy_value, policy_inner, POLICY_INNER_MAX,
	    BPF_F_NO_PREALLOC);
BPF_ARRAY_OF_MAPS(policy, "policy_inner", POLICY_SLOTS);
BPF_TABLE("lru_hash", struct ct_key, struct ct_entry, conntrack, CT_MAX);
BPF_TABLE("lru_hash", struct drop_key, struct drop_state, drops, DROPS_MAX);
BPF_TABLE("lru_hash", struct frag_key, struct frag_value, frags, FRAGS_MAX);
BPF_ARRAY(config, struct dp_config, 1);
BPF_PERCPU_ARRAY(metrics, struct metric_value, METRICS_MAX);
BPF_PERCPU_ARRAY(failed_out, __u64, FAILED_OUTPUT_SLOTS);
BPF_PERCPU_ARRAY(scratch, struct scratch, 1);
BPF_PERF_OUTPUT(events);

#define CFG(cfg, field, dflt) (((cfg) && (cfg)->report_interval_ns && (cfg)->field) ? (cfg)->field : (dflt))

static __always_inline __u32 cfg_aggregation(struct dp_config *cfg)
{
	if (cfg && cfg->report_interval_ns)
		return cfg->aggregation;
	return DEFAULT_AGGREGATION;
}

/* ------------------------------------------------------------------ parsing */

static __always_inline int is_icmp4_error(__u8 type)
{
	return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

static __always_inline int is_icmp6_error(__u8 type)
{
	return type >= 1 && type <= 4;
}

/* Ports of an embedded (ICMP error) packet's L4 header at `off`. */
static __always_inline void parse_inner_l4(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
	__u8 b[8];

	if (p->iproto == NS_IPPROTO_TCP || p->iproto == NS_IPPROTO_UDP ||
	    p->iproto == NS_IPPROTO_SCTP) {
		if (bpf_skb_load_bytes(skb, off, b, 4) < 0)
			goto none;
		p->isport = ((__u16)b[0] << 8) | b[1];
		p->idport = ((__u16)b[2] << 8) | b[3];
		return;
	}
	if (p->iproto == NS_IPPROTO_ICMP || p->iproto == NS_IPPROTO_ICMPV6) {
		if (bpf_skb_load_bytes(skb, off, b, 8) < 0)
			goto none;
		__u16 id = ((__u16)b[4] << 8) | b[5];
		if (b[0] == 8 || b[0] == 128) {        /* echo request */
			p->isport = id;
			p->idport = 0;
		} else if (b[0] == 0 || b[0] == 129) { /* echo reply */
			p->isport = 0;
			p->idport = id;
		} else {
			p->isport = 0;
			p->idport = 0;
		}
		return;
	}
	p->isport = 0;
	p->idport = 0;
	return;
none:
	p->iproto = 0;
}

/* L4 header at `off`; returns PARSE_OK, PARSE_PASS or a drop reason. */
static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
	__u8 b[20];

	p->sport = 0;
	p->dport = 0;
	if (p->proto == NS_IPPROTO_TCP) {
		if (off + 20 > p->l3end || bpf_skb_load_bytes(skb, off, b, 20) < 0)
			return DROP_CT_TRUNCATED_OR_INVALID_HEADER;
		if ((b[12] >> 4) < 5)
			return DROP_CT_TRUNCATED_OR_INVALID_HEADER;
		p->sport = ((__u16)b[0] << 8) | b[1];
		p->dport = ((__u16)b[2] << 8) | b[3];
		p->tcp_flags = b[13];
		return PARSE_OK;
	}
	if (p->proto == NS_IPPROTO_UDP || p->proto == NS_IPPROTO_SCTP) {
		__u32 need = p->proto == NS_IPPROTO_UDP ? 8 : 12;
		if (off + need > p->l3end || bpf_skb_load_bytes(skb, off, b, 4) < 0)
			return DROP_CT_TRUNCATED_OR_INVALID_HEADER;
		p->sport = ((__u16)b[0] << 8) | b[1];
		p->dport = ((__u16)b[2] << 8) | b[3];
		return PARSE_OK;
	}
	if (p->proto == NS_IPPROTO_ICMP || p->proto == NS_IPPROTO_ICMPV6) {
		if (off + 8 > p->l3end || bpf_skb_load_bytes(skb, off, b, 8) < 0)
			return DROP_CT_TRUNCATED_OR_INVALID_HEADER;
		__u8 type = b[0];
		__u16 id = ((__u16)b[4] << 8) | b[5];
		p->icmp_type = type;
		p->icmp_code = b[1];
		if (p->proto == NS_IPPROTO_ICMPV6) {
			/* neighbour discovery (RFC 4861: hop limit 255, so never a
			 * forwarded packet; anything else is judged by policy) */
			if (type >= 133 && type <= 137 && p->hlim == 255)
				return p->frag ? DROP_INVALID_PACKET : PARSE_PASS;
			if (type == 128) {
				p->sport = id;
			} else if (type == 129) {
				p->dport = id;
			} else if (is_icmp6_error(type) && !p->frag) {
				struct ip6_hdr ih;
				if (bpf_skb_load_bytes(skb, off + 8, &ih, sizeof(ih)) == 0 &&
				    (bswap32(ih.vtcfl) >> 28) == 6) {
					p->iproto = ih.nexthdr;
					__builtin_memcpy(p->isaddr, ih.saddr, 16);
					__builtin_memcpy(p->idaddr, ih.daddr, 16);
					parse_inner_l4(skb, p, off + 8 + sizeof(ih));
				}
			}
		} else {
			if (type == 8) {
				p->sport = id;
			} else if (type == 0) {
				p->dport = id;
			} else if (is_icmp4_error(type) && !p->frag) {
				struct ip4_hdr ih;
				if (bpf_skb_load_bytes(skb, off + 8, &ih, sizeof(ih)) == 0 &&
				    (ih.vihl >> 4) == 4 && (ih.vihl & 0xf) >= 5) {
					p->iproto = ih.proto;
					__builtin_memset(p->isaddr, 0, 16);
					__builtin_memset(p->idaddr, 0, 16);
					__builtin_memcpy(p->isaddr, ih.saddr, 4);
					__builtin_memcpy(p->idaddr, ih.daddr, 4);
					parse_inner_l4(skb, p, off + 8 + (ih.vihl & 0xf) * 4);
				}
			}
		}
		return PARSE_OK;
	}
	/* other protocols (ESP, GRE, no next header, ...): judged with ports 0 */
	return PARSE_OK;
}

static __always_inline void frag_key_fill(struct scratch *s)
{
	struct pkt *p = &s->p;
	__builtin_memcpy(s->fk.saddr, p->saddr, 16);
	__builtin_memcpy(s->fk.daddr, p->daddr, 16);
	s->fk.id = p->frag_id;
	s->fk.proto = p->proto;
	s->fk.family = p->family;
	s->fk.pad = 0;
}

/* A non-first fragment takes the L4 fields its first fragment recorded. */
static __always_inline int frag_lookup(struct scratch *s, __u64 now)
{
	frag_key_fill(s);
	struct frag_value *fv = frags.lookup(&s->fk);
	if (!fv || fv->expires_ns < now)
		return DROP_FRAG_NOT_FOUND;
	s->p.sport = fv->sport;
	s->p.dport = fv->dport;
	s->p.icmp_type = fv->icmp_type;
	s->p.icmp_code = fv->icmp_code;
	return PARSE_OK;
}

static __always_inline void frag_record(struct scratch *s, __u64 now)
{
	frag_key_fill(s);
	s->fv.expires_ns = now + FRAG_TIMEOUT_NS;
	s->fv.sport = s->p.sport;
	s->fv.dport = s->p.dport;
	s->fv.icmp_type = s->p.icmp_type;
	s->fv.icmp_code = s->p.icmp_code;
	s->fv.pad = 0;
	frags.update(&s->fk, &s->fv);
}

/* The minimal L4 header a first fragment must carry (RFC 1858, RFC 8200 4.5). */
static __always_inline __u32 l4_min_header(__u8 proto)
{
	if (proto == NS_IPPROTO_TCP)
		return 20;
	if (proto == NS_IPPROTO_SCTP)
		return 12;
	if (proto == NS_IPPROTO_UDP || proto == NS_IPPROTO_ICMP || proto == NS_IPPROTO_ICMPV6)
		return 8;
	return 0;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct scratch *s, __u64 now)
{
	struct pkt *p = &s->p;
	struct ip4_hdr ih;

	if (bpf_skb_load_bytes(skb, NS_ETH_HLEN, &ih, sizeof(ih)) < 0)
		return DROP_INVALID_PACKET;
	__u32 ihl = (ih.vihl & 0xf) * 4;
	__u32 tot = bswap16(ih.tot_len);
	if ((ih.vihl >> 4) != 4 || ihl < 20)
		return DROP_INVALID_PACKET;
	if (tot == 0 && skb->gso_size) /* BIG TCP: the length lives in the skb only */
		tot = skb->len - NS_ETH_HLEN;
	if (tot < ihl || NS_ETH_HLEN + tot > skb->len)
		return DROP_INVALID_PACKET;
	p->family = 4;
	p->proto = ih.proto;
	p->l3end = NS_ETH_HLEN + tot;
	__builtin_memcpy(p->saddr, ih.saddr, 4);
	__builtin_memcpy(p->daddr, ih.daddr, 4);

	__u16 fo = bswap16(ih.frag_off);
	__u32 offset = fo & 0x1fff;
	if (offset || (fo & 0x2000)) {
		p->frag_id = bswap16(ih.id);
		if (offset) {
			p->frag = 1;
			/* RFC 1858: a TCP fragment at offset 8 can rewrite the flags */
			if (offset == 1 && p->proto == NS_IPPROTO_TCP)
				return DROP_INVALID_PACKET;
			return frag_lookup(s, now);
		}
		p->frag = 2;
		if (NS_ETH_HLEN + ihl + l4_min_header(p->proto) > p->l3end)
			return DROP_CT_TRUNCATED_OR_INVALID_HEADER;
	}
	int r = parse_l4(skb, p, NS_ETH_HLEN + ihl);
	if (r == PARSE_OK && p->frag == 2)
		frag_record(s, now);
	return r;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct scratch *s, __u64 now)
{
	struct pkt *p = &s->p;
	struct ip6_hdr ih;
	__u8 b[8];

	if (bpf_skb_load_bytes(skb, NS_ETH_HLEN, &ih, sizeof(ih)) < 0)
		return DROP_INVALID_PACKET;
	if ((bswap32(ih.vtcfl) >> 28) != 6)
		return DROP_INVALID_PACKET;
	__u32 plen = bswap16(ih.plen);
	if (plen == 0 && skb->gso_size) /* BIG TCP */
		plen = skb->len - NS_ETH_HLEN - sizeof(ih);
	if (NS_ETH_HLEN + sizeof(ih) + plen > skb->len)
		return DROP_INVALID_PACKET;
	p->family = 6;
	p->hlim = ih.hlim;
	p->l3end = NS_ETH_HLEN + sizeof(ih) + plen;
	__builtin_memcpy(p->saddr, ih.saddr, 16);
	__builtin_memcpy(p->daddr, ih.daddr, 16);

	__u8 nh = ih.nexthdr;
	__u32 off = NS_ETH_HLEN + sizeof(ih);
	int done = 0;
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		if (done)
			break;
		if (nh == NS_IPPROTO_HOPOPTS || nh == NS_IPPROTO_ROUTING ||
		    nh == NS_IPPROTO_DSTOPTS || nh == NS_IPPROTO_AH) {
			if (off + 8 > p->l3end || bpf_skb_load_bytes(skb, off, b, 2) < 0)
				return DROP_INVALID_IPV6_EXTENSION_HEADER;
			nh = b[0];
			if (nh == NS_IPPROTO_AH)
				off += ((__u32)b[1] + 2) * 4;
			else
				off += ((__u32)b[1] + 1) * 8;
			continue;
		}
		if (nh == NS_IPPROTO_FRAGMENT) {
			if (off + 8 > p->l3end || bpf_skb_load_bytes(skb, off, b, 8) < 0)
				return DROP_INVALID_IPV6_EXTENSION_HEADER;
			nh = b[0];
			__u16 fo = ((__u16)b[2] << 8) | b[3];
			off += 8;
			p->frag_id = ((__u32)b[4] << 24) | ((__u32)b[5] << 16) | ((__u32)b[6] << 8) | b[7];
			if (fo & 0xfff8) {
				p->frag = 1;
				done = 1;
			} else if (fo & 1) {
				p->frag = 2;
			}
			continue;
		}
		done = 1;
	}
	if (!done && (nh == NS_IPPROTO_HOPOPTS || nh == NS_IPPROTO_ROUTING ||
		      nh == NS_IPPROTO_DSTOPTS || nh == NS_IPPROTO_AH || nh == NS_IPPROTO_FRAGMENT))
		return DROP_INVALID_IPV6_EXTENSION_HEADER;
	p->proto = nh;
	if (p->frag == 1)
		return frag_lookup(s, now);
	if (p->frag == 2 && off + l4_min_header(nh) > p->l3end)
		return DROP_CT_TRUNCATED_OR_INVALID_HEADER;
	int r = parse_l4(skb, p, off);
	if (r == PARSE_OK && p->frag == 2)
		frag_record(s, now);
	return r;
}

static __always_inline int parse(struct __sk_buff *skb, struct scratch *s, __u64 now)
{
	struct eth_hdr eth;

	__builtin_memset(&s->p, 0, sizeof(s->p));
	s->p.len = skb->len;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return DROP_INVALID_PACKET;
	__u16 proto = bswap16(eth.proto);
	if (proto == NS_ETH_P_ARP)
		return PARSE_PASS;
	if (proto == NS_ETH_P_IP)
		return parse_ipv4(skb, s, now);
	if (proto == NS_ETH_P_IPV6)
		return parse_ipv6(skb, s, now);
	return DROP_UNSUPPORTED_L3_PROTOCOL;
}

/* ------------------------------------------------------------------ identity */

static __always_inline __u32 ipcache_lookup(struct scratch *s, __u8 family, __u8 *addr)
{
	struct ipcache_value *v;

	if (family == 4) {
		struct ipcache4_key k4 = {.prefixlen = 32};
		__builtin_memcpy(k4.addr, addr, 4);
		v = ipcache4.lookup(&k4);
	} else if (family == 6) {
		s->ik6.prefixlen = 128;
		__builtin_memcpy(s->ik6.addr, addr, 16);
		v = ipcache6.lookup(&s->ik6);
	} else {
		return 0;
	}
	return v ? v->identity : IDENTITY_WORLD;
}

/* ------------------------------------------------------------------ policy */

static __always_inline void *policy_map(__u32 endpoint_id, __u8 dir)
{
	__u32 slot = endpoint_id * 2 + dir;
	if (endpoint_id > MAX_ENDPOINT_ID)
		return 0;
	return policy.lookup(&slot);
}

static __always_inline struct policy_value *policy_config(void *inner, struct scratch *s)
{
	__builtin_memset(&s->pk, 0, sizeof(s->pk));
	s->pk.prefixlen = POLICY_KEY_BITS;
	s->pk.kind = bswap32(POLICY_KIND_CONFIG);
	return bpf_map_lookup_elem(inner, &s->pk);
}

/* The generation of the policy in force for (endpoint, direction); 0 if none. */
static __always_inline __u32 policy_generation(struct scratch *s, __u32 endpoint_id, __u8 dir)
{
	void *inner = policy_map(endpoint_id, dir);
	if (!inner)
		return 0;
	struct policy_value *cfg = policy_config(inner, s);
	return cfg ? cfg->generation : 0;
}

static __always_inline int rule_lookup(void *inner, struct scratch *s, __u32 peer, __u8 proto,
				       __u16 port, __u32 *attribution)
{
	s->pk.prefixlen = POLICY_KEY_BITS;
	s->pk.kind = bswap32(POLICY_KIND_RULE);
	s->pk.w[0] = bswap32(peer);
	s->pk.w[1] = bswap32(((__u32)proto << 16) | port);
	s->pk.w[2] = 0;
	s->pk.w[3] = 0;
	struct policy_value *v = bpf_map_lookup_elem(inner, &s->pk);
	if (!v)
		return 0;
	*attribution = v->id;
	return 1;
}

/*
 * Decide a new connection: remote identity, then ANY, then the CIDR group of
 * the remote address. Results: DECIDE_*; *attribution and *generation filled.
 */
static __always_inline int policy_decide(struct scratch *s, __u32 endpoint_id, __u8 dir,
					 __u32 remote_identity, __u8 family, __u8 *remote_addr,
					 __u8 proto, __u16 port, __u32 *attribution,
					 __u32 *generation)
{
	*attribution = 0;
	*generation = 0;
	void *inner = policy_map(endpoint_id, dir);
	if (!inner)
		return DECIDE_ALLOW; /* empty slot: not enforced */
	struct policy_value *cfg = policy_config(inner, s);
	if (!cfg)
		return DECIDE_NO_CONFIG;
	__u32 flags = cfg->flags;
	__u32 deny_attribution = cfg->id;
	*generation = cfg->generation;
	if (!(flags & POLICY_CFG_ENFORCED))
		return DECIDE_ALLOW;
	if (rule_lookup(inner, s, remote_identity, proto, port, attribution))
		return DECIDE_ALLOW;
	if (rule_lookup(inner, s, 0, proto, port, attribution))
		return DECIDE_ALLOW;
	/* ipBlock: the remote address itself, whatever its identity */
	__builtin_memset(&s->pk, 0, sizeof(s->pk));
	s->pk.prefixlen = POLICY_KEY_BITS;
	if (family == 4) {
		s->pk.kind = bswap32(POLICY_KIND_CIDR4);
		__builtin_memcpy(&s->pk.w[0], remote_addr, 4);
	} else {
		s->pk.kind = bswap32(POLICY_KIND_CIDR6);
		__builtin_memcpy(&s->pk.w[0], remote_addr, 16);
	}
	struct policy_value *g = bpf_map_lookup_elem(inner, &s->pk);
	if (g && g->id) {
		__u32 group = g->id;
		if (rule_lookup(inner, s, group, proto, port, attribution))
			return DECIDE_ALLOW;
	}
	*attribution = deny_attribution;
	return (flags & POLICY_CFG_AUDIT) ? DECIDE_AUDIT : DECIDE_DENY;
}

/* ------------------------------------------------------------------ output */

static __always_inline void count(__u8 dir, __u8 verdict, __u32 reason, __u32 len)
{
	__u32 key = METRIC_KEY(dir, verdict, reason);
	struct metric_value *m = metrics.lookup(&key);
	if (m) {
		m->packets += 1;
		m->bytes += len;
	}
}

static __always_inline void emit(struct __sk_buff *skb, struct flow_event *ev)
{
	int ret = events.perf_submit(skb, ev, sizeof(*ev));
	if (ret < 0) {
		__u32 slot = ret == -NS_ENOENT ? FAILED_NO_READER
			   : ret == -NS_ENOSPC ? FAILED_RING_FULL : FAILED_OTHER;
		__u64 *c = failed_out.lookup(&slot);
		if (c)
			*c += 1;
	}
}

static __always_inline void ev_init(struct scratch *s, __u64 now, __u32 ifindex,
				    __u32 endpoint_id, __u8 dir, __u8 reason)
{
	struct flow_event *ev = &s->ev;
	struct pkt *p = &s->p;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = now;
	ev->ifindex = ifindex;
	ev->endpoint_id = endpoint_id;
	ev->direction = dir;
	ev->reason = reason;
	ev->family = p->family;
	ev->proto = p->proto;
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->tcp_flags = p->tcp_flags;
	ev->icmp_type = p->icmp_type;
	ev->icmp_code = p->icmp_code;
	ev->pkt_len = p->len;
	if (p->frag == 1)
		ev->flags |= EVF_FRAGMENT;
}

static __always_inline void ev_identities(struct flow_event *ev, __u8 dir, __u32 own,
					  __u32 remote)
{
	if (dir == DIR_EGRESS) {
		ev->src_identity = own;
		ev->dst_identity = remote;
	} else {
		ev->src_identity = remote;
		ev->dst_identity = own;
	}
}

static __always_inline void ct_key_fill(struct ct_key *k, struct pkt *p, __u32 ifindex, __u8 dir)
{
	__builtin_memcpy(k->saddr, p->saddr, 16);
	__builtin_memcpy(k->daddr, p->daddr, 16);
	k->sport = p->sport;
	k->dport = p->dport;
	k->ifindex = ifindex;
	k->proto = p->proto;
	k->family = p->family;
	k->direction = dir;
	k->pad = 0;
}

/*
 * Drop a packet: count it, report it (rate-limited per tuple and reason at the
 * medium and maximum levels), return TC_ACT_SHOT.
 */
static __always_inline int drop(struct __sk_buff *skb, struct scratch *s, struct dp_config *cfg,
				__u64 now, __u32 ifindex, struct endpoint_info *ep, __u8 dir,
				__u32 reason, __u32 remote_identity, __u32 attribution, __u32 evflags)
{
	struct pkt *p = &s->p;
	__u32 suppressed = 0;

	count(dir, VERDICT_DROPPED, reason, p->len);
	if (cfg_aggregation(cfg) >= AGG_MEDIUM) {
		ct_key_fill(&s->dk.tuple, p, ifindex, dir);
		s->dk.reason = reason;
		struct drop_state *st = drops.lookup(&s->dk);
		if (st) {
			st->remote_identity = remote_identity;
			st->attribution = attribution;
			if (now - st->last_report_ns < CFG(cfg, drop_interval_ns, DEFAULT_DROP_INTERVAL_NS)) {
				__sync_fetch_and_add(&st->suppressed, 1);
				return TC_ACT_SHOT;
			}
			st->last_report_ns = now;
			suppressed = (__u32)__sync_lock_test_and_set(&st->suppressed, 0);
		} else {
			s->ds.last_report_ns = now;
			s->ds.suppressed = 0;
			s->ds.remote_identity = remote_identity;
			s->ds.attribution = attribution;
			drops.update(&s->dk, &s->ds);
		}
	}
	ev_init(s, now, ifindex, ep ? ep->endpoint_id : 0, dir, EV_DROP);
	struct flow_event *ev = &s->ev;
	ev->verdict = VERDICT_DROPPED;
	ev->drop_reason = reason;
	ev->attribution = attribution;
	ev->suppressed = suppressed;
	ev->flags |= evflags;
	ev->packets = 1;
	ev->bytes = p->len;
	ev_identities(ev, dir, ep ? ep->identity : 0, remote_identity);
	emit(skb, ev);
	return TC_ACT_SHOT;
}

static __always_inline __u64 ct_timeout(struct dp_config *cfg, __u8 proto, __u64 state)
{
	if (proto == NS_IPPROTO_TCP) {
		if (state & (CT_S_RST | CT_S_ENDED | CT_S_FIN_ORIG | CT_S_FIN_REPLY))
			return CFG(cfg, ct_tcp_close_ns, DEFAULT_CT_TCP_CLOSE_NS);
		if (state & CT_S_SEEN_REPLY)
			return CFG(cfg, ct_tcp_established_ns, DEFAULT_CT_TCP_ESTABLISHED_NS);
		return CFG(cfg, ct_tcp_syn_ns, DEFAULT_CT_TCP_SYN_NS);
	}
	return CFG(cfg, ct_other_ns, DEFAULT_CT_OTHER_NS);
}

/* Move the connection's counters into the event (atomically: nothing counted twice). */
static __always_inline void ev_take_counters(struct flow_event *ev, struct ct_entry *ct, __u64 now)
{
	ct->last_report_ns = now;
	ev->packets = __sync_lock_test_and_set(&ct->packets, 0);
	ev->bytes = __sync_lock_test_and_set(&ct->bytes, 0);
	ev->reply_packets = __sync_lock_test_and_set(&ct->reply_packets, 0);
	ev->reply_bytes = __sync_lock_test_and_set(&ct->reply_bytes, 0);
}

/* ------------------------------------------------------------------ the hook */

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	__u32 zero = 0;
	struct scratch *s = scratch.lookup(&zero);
	if (!s)
		return TC_ACT_SHOT;
	struct dp_config *cfg = config.lookup(&zero);
	__u64 now = bpf_ktime_get_ns();
	__u32 ifindex = skb->ifindex;
	struct pkt *p = &s->p;

	int r = parse(skb, s, now);
	if (r == PARSE_PASS)
		return TC_ACT_OK;
	struct endpoint_info *ep = endpoints.lookup(&ifindex);
	if (!ep)
		return drop(skb, s, cfg, now, ifindex, 0, dir, DROP_EP_NOT_READY,
			    ipcache_lookup(s, p->family, dir == DIR_EGRESS ? p->daddr : p->saddr), 0, 0);
	if (r != PARSE_OK)
		return drop(skb, s, cfg, now, ifindex, ep, dir, r,
			    ipcache_lookup(s, p->family, dir == DIR_EGRESS ? p->daddr : p->saddr), 0, 0);

	__u32 endpoint_id = ep->endpoint_id;
	__u32 own_identity = ep->identity;
	__u32 level = cfg_aggregation(cfg);
	__u8 *remote_addr = dir == DIR_EGRESS ? p->daddr : p->saddr;
	__u32 evflags = p->frag == 1 ? EVF_FRAGMENT : 0;
	__u8 is_reply = 0;

	/* ---- conntrack: the connection this packet belongs to, if any ---- */
	ct_key_fill(&s->k, p, ifindex, dir);
	struct ct_entry *ct = conntrack.lookup(&s->k);
	if (ct && ct->expires_ns < now) {
		conntrack.delete(&s->k);
		ct = 0;
	}
	if (!ct) {
		__builtin_memcpy(s->rk.saddr, p->daddr, 16);
		__builtin_memcpy(s->rk.daddr, p->saddr, 16);
		s->rk.sport = p->dport;
		s->rk.dport = p->sport;
		s->rk.ifindex = ifindex;
		s->rk.proto = p->proto;
		s->rk.family = p->family;
		s->rk.direction = !dir;
		s->rk.pad = 0;
		ct = conntrack.lookup(&s->rk);
		if (ct && ct->expires_ns < now) {
			conntrack.delete(&s->rk);
			ct = 0;
		}
		if (ct)
			is_reply = 1;
	}

	/* An ICMP error about a packet of a known connection is related to it. */
	if (!ct && p->iproto) {
		struct ct_entry *rel;
		__builtin_memcpy(s->rk.saddr, p->isaddr, 16);
		__builtin_memcpy(s->rk.daddr, p->idaddr, 16);
		s->rk.sport = p->isport;
		s->rk.dport = p->idport;
		s->rk.ifindex = ifindex;
		s->rk.proto = p->iproto;
		s->rk.family = p->family;
		s->rk.direction = !dir; /* the embedded packet travelled the other way */
		rel = conntrack.lookup(&s->rk);
		if (!rel) {
			__builtin_memcpy(s->rk.saddr, p->idaddr, 16);
			__builtin_memcpy(s->rk.daddr, p->isaddr, 16);
			s->rk.sport = p->idport;
			s->rk.dport = p->isport;
			s->rk.direction = dir;
			rel = conntrack.lookup(&s->rk);
		}
		if (rel && rel->expires_ns >= now) {
			count(dir, rel->verdict, rel->verdict == VERDICT_AUDIT ? DROP_POLICY_DENIED : 0, p->len);
			if (level != AGG_MAXIMUM) {
				ev_init(s, now, ifindex, endpoint_id, dir, EV_PACKET);
				s->ev.verdict = rel->verdict;
				s->ev.ct_state = CT_STATE_RELATED;
				s->ev.attribution = rel->attribution;
				s->ev.packets = 1;
				s->ev.bytes = p->len;
				s->ev.flags |= evflags;
				ev_identities(&s->ev, dir, own_identity, rel->remote_identity);
				emit(skb, &s->ev);
			}
			return TC_ACT_OK;
		}
	}

	/* A new SYN on a closed connection's tuple starts a new connection. */
	if (ct && !is_reply && p->proto == NS_IPPROTO_TCP &&
	    (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	    (ct->state & (CT_S_RST | CT_S_ENDED | CT_S_FIN_ORIG | CT_S_FIN_REPLY))) {
		conntrack.delete(&s->k);
		ct = 0;
	}

	if (ct) {
		__u8 verdict = ct->verdict;
		__u64 state_bits = 0;
		int reason = 0;

		if (!is_reply) {
			/* the endpoint's policy changed since this connection was judged */
			__u32 gen = policy_generation(s, endpoint_id, dir);
			if (gen != ct->generation) {
				__u32 attribution, generation;
				__u32 remote = ipcache_lookup(s, p->family, remote_addr);
				int d = DECIDE_ALLOW;
				if (remote != IDENTITY_HOST)
					d = policy_decide(s, endpoint_id, dir, remote, p->family, remote_addr,
							  p->proto, p->dport, &attribution, &generation);
				else
					attribution = 0, generation = gen;
				if (d == DECIDE_DENY || d == DECIDE_NO_CONFIG) {
					conntrack.delete(&s->k);
					return drop(skb, s, cfg, now, ifindex, ep, dir,
						    d == DECIDE_DENY ? DROP_POLICY_DENIED : DROP_NO_CONFIGURATION,
						    remote, attribution, EVF_RECHECK | evflags);
				}
				verdict = d == DECIDE_AUDIT ? VERDICT_AUDIT : VERDICT_FORWARDED;
				ct->verdict = verdict;
				ct->attribution = attribution;
				ct->remote_identity = remote;
				ct->generation = generation;
				evflags |= EVF_RECHECK;
			}
		}

		/* account */
		if (is_reply) {
			__sync_fetch_and_add(&ct->reply_packets, 1);
			__sync_fetch_and_add(&ct->reply_bytes, p->len);
			state_bits |= CT_S_SEEN_REPLY;
		} else {
			__sync_fetch_and_add(&ct->packets, 1);
			__sync_fetch_and_add(&ct->bytes, p->len);
		}
		__u64 new_flags = 0;
		if (p->proto == NS_IPPROTO_TCP && p->frag != 1) {
			__u64 bits = (__u64)p->tcp_flags << (is_reply ? 8 : 0);
			__u64 old = __sync_fetch_and_or(&ct->tcp_flags, bits);
			new_flags = bits & ~old;
			if (p->tcp_flags & TCP_RST)
				state_bits |= CT_S_RST;
			if (p->tcp_flags & TCP_FIN)
				state_bits |= is_reply ? CT_S_FIN_REPLY : CT_S_FIN_ORIG;
		}
		__u64 state = ct->state;
		if (state_bits & ~state)
			state = __sync_fetch_and_or(&ct->state, state_bits) | state_bits;
		if (!(state & CT_S_ENDED) && ((state & CT_S_RST) ||
		    ((state & CT_S_FIN_ORIG) && (state & CT_S_FIN_REPLY)))) {
			__u64 prev = __sync_fetch_and_or(&ct->state, CT_S_ENDED);
			if (!(prev & CT_S_ENDED)) {
				reason = EV_END;
				state |= CT_S_ENDED;
			}
		}
		ct->expires_ns = now + ct_timeout(cfg, p->proto, state);

		if (!reason) {
			if (level == AGG_NONE) {
				reason = EV_PACKET;
			} else if (level != AGG_MAXIMUM && new_flags) {
				reason = EV_FLAGS;
			} else if (level == AGG_LOW && (p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST))) {
				reason = EV_FLAGS;
			} else {
				__u64 last = ct->last_report_ns;
				if (now - last >= CFG(cfg, report_interval_ns, DEFAULT_REPORT_INTERVAL_NS) &&
				    __sync_val_compare_and_swap(&ct->last_report_ns, last, now) == last)
					reason = EV_PERIODIC;
			}
		}
		count(dir, verdict, verdict == VERDICT_AUDIT ? DROP_POLICY_DENIED : 0, p->len);
		if (reason) {
			ev_init(s, now, ifindex, endpoint_id, dir, reason);
			struct flow_event *ev = &s->ev;
			ev->verdict = verdict;
			if (verdict == VERDICT_AUDIT)
				ev->drop_reason = DROP_POLICY_DENIED;
			ev->is_reply = is_reply;
			ev->ct_state = is_reply ? CT_STATE_REPLY : CT_STATE_ESTABLISHED;
			ev->attribution = ct->attribution;
			ev->flags |= evflags;
			ev_identities(ev, dir, own_identity, ct->remote_identity);
			ev_take_counters(ev, ct, now);
			emit(skb, ev);
		}
		return TC_ACT_OK;
	}

	/* ---- a new connection: identity and policy ---- */
	__u32 remote = ipcache_lookup(s, p->family, remote_addr);
	__u32 attribution = 0, generation = 0;
	int d;
	if (remote == IDENTITY_HOST) {
		/* a pod and its own node always talk */
		generation = policy_generation(s, endpoint_id, dir);
		d = DECIDE_ALLOW;
		evflags |= EVF_HOST;
	} else {
		d = policy_decide(s, endpoint_id, dir, remote, p->family, remote_addr, p->proto,
				  p->dport, &attribution, &generation);
	}
	if (d == DECIDE_DENY)
		return drop(skb, s, cfg, now, ifindex, ep, dir, DROP_POLICY_DENIED, remote,
			    attribution, evflags);
	if (d == DECIDE_NO_CONFIG)
		return drop(skb, s, cfg, now, ifindex, ep, dir, DROP_NO_CONFIGURATION, remote,
			    attribution, evflags);

	__u8 verdict = d == DECIDE_AUDIT ? VERDICT_AUDIT : VERDICT_FORWARDED;
	struct ct_entry *ne = &s->ne;
	__builtin_memset(ne, 0, sizeof(*ne));
	ne->created_ns = now;
	ne->last_report_ns = now;
	ne->remote_identity = remote;
	ne->attribution = attribution;
	ne->generation = generation;
	ne->verdict = verdict;
	if (p->proto == NS_IPPROTO_TCP && p->frag != 1) {
		ne->tcp_flags = p->tcp_flags;
		if (p->tcp_flags & TCP_RST)
			ne->state |= CT_S_RST | CT_S_ENDED;
		if (p->tcp_flags & TCP_FIN)
			ne->state |= CT_S_FIN_ORIG;
	}
	ne->expires_ns = now + ct_timeout(cfg, p->proto, ne->state);
	if (conntrack.update(&s->k, ne) < 0)
		return drop(skb, s, cfg, now, ifindex, ep, dir, DROP_CT_MAP_INSERTION_FAILED, remote,
			    attribution, evflags);
	count(dir, verdict, verdict == VERDICT_AUDIT ? DROP_POLICY_DENIED : 0, p->len);

	ev_init(s, now, ifindex, endpoint_id, dir, EV_START);
	struct flow_event *ev = &s->ev;
	ev->verdict = verdict;
	if (verdict == VERDICT_AUDIT)
		ev->drop_reason = DROP_POLICY_DENIED;
	ev->ct_state = CT_STATE_NEW;
	ev->attribution = attribution;
	ev->flags |= evflags;
	ev->packets = 1;
	ev->bytes = p->len;
	ev_identities(ev, dir, own_identity, remote);
	emit(skb, ev);
	return TC_ACT_OK;
}

int from_pod(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

int to_pod(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}
