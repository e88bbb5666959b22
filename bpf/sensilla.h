/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sensilla.h: every layout shared between the eBPF programs (bpf/sensilla.c)
 * and user space (datapath/layout.py mirrors each struct and constant; the test
 * tests/datapath/test_layout.py compiles a probe against this header and checks
 * that every size, offset and constant agrees).
 *
 * Conventions
 * - Addresses are stored as 16 bytes in network order; an IPv4 address fills the
 *   first 4 bytes and the rest is zero.
 * - Ports in tuples (conntrack, events) are in host byte order.
 * - Fields that the programs update with atomic instructions are __u64: the
 *   compiler bcc uses (LLVM 14, default CPU) only has 64-bit atomics with fetch.
 * - The policy trie's key is matched bit by bit from `kind`: every field after
 *   `prefixlen` is big-endian so that prefixes cut where they should.
 *
 * This header must compile both under bcc (BPF target) and under a normal C
 * compiler (the layout probe), so it only uses <linux/types.h>.
 */
#ifndef SENSILLA_H
#define SENSILLA_H

#include <linux/types.h>

#define SENSILLA_LAYOUT_VERSION 1

/* ---- directions (datapath.types.Direction), from the pod's point of view ---- */
#define DIR_INGRESS 0 /* towards the pod: the lxc device's TC egress hook (to_pod) */
#define DIR_EGRESS 1  /* from the pod: the lxc device's TC ingress hook (from_pod) */

/* ---- verdicts (flow.Verdict numbers) ---- */
#define VERDICT_FORWARDED 1
#define VERDICT_DROPPED 2
#define VERDICT_AUDIT 4

/* ---- drop reasons (Cilium's flow.DropReason numbers) ---- */
#define DROP_POLICY_DENIED 133
#define DROP_INVALID_PACKET 134
#define DROP_CT_TRUNCATED_OR_INVALID_HEADER 135
#define DROP_UNSUPPORTED_L3_PROTOCOL 139
#define DROP_CT_MAP_INSERTION_FAILED 155
#define DROP_INVALID_IPV6_EXTENSION_HEADER 156
#define DROP_NO_CONFIGURATION 165
#define DROP_FRAG_NOT_FOUND 175
#define DROP_EP_NOT_READY 203

/* ---- reserved identities ---- */
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

/* ---- map sizes ---- */
#define ENDPOINTS_MAX 4096
#define IPCACHE_MAX 65536
#define MAX_ENDPOINT_ID 65535                     /* endpoint ids are 1..65535 */
#define POLICY_SLOTS ((MAX_ENDPOINT_ID + 1) * 2)  /* slot = endpoint id * 2 + direction */
#define POLICY_INNER_MAX 65536                    /* entries of one endpoint+direction */
#define CT_MAX 262144
#define DROPS_MAX 16384
#define FRAGS_MAX 8192
#define METRICS_MAX 4096
#define FAILED_OUTPUT_SLOTS 4
#define IPV6_MAX_EXT_HEADERS 8

/* ---- endpoints: hash, key = host-side ifindex (__u32) ---- */
struct endpoint_info {
	__u32 endpoint_id;
	__u32 identity;
	__u32 flags;    /* reserved, zero */
	__u32 reserved;
};

/* ---- ipcache: LPM tries, miss = IDENTITY_WORLD ---- */
struct ipcache4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct ipcache6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct ipcache_value {
	__u32 identity;
	__u32 flags; /* reserved, zero */
};

/* ---- policy: ARRAY_OF_MAPS[endpoint id * 2 + direction] -> LPM trie ----
 *
 * One inner trie holds everything one endpoint needs for one direction; an
 * update builds a new trie and swaps the outer slot (atomic). An empty slot
 * means "not enforced". Entry kinds, all matched from `kind` on:
 *   CONFIG  prefixlen 32                 value: flags ENFORCED|AUDIT, generation,
 *                                        id = attribution of default-deny drops
 *   RULE    w[0] = peer identity (0 = any), w[1] = protocol << 16 | port
 *           prefixlen 64 (any protocol, any port), 80 (one protocol, any port),
 *           80 + n (one protocol, the 2^(16-n) ports of an aligned block)
 *                                        value: id = attribution
 *   CIDR4   w[0] = address, prefixlen 32 + n      value: id = CIDR group (0: none)
 *   CIDR6   w[0..3] = address, prefixlen 32 + n   value: id = CIDR group (0: none)
 * Lookups always use the full prefix length POLICY_KEY_BITS.
 */
#define POLICY_KIND_CONFIG 1
#define POLICY_KIND_RULE 2
#define POLICY_KIND_CIDR4 3
#define POLICY_KIND_CIDR6 4
#define POLICY_KEY_BITS 160

#define POLICY_CFG_ENFORCED 1
#define POLICY_CFG_AUDIT 2

struct policy_key {
	__u32 prefixlen;
	__be32 kind;
	__be32 w[4];
};

struct policy_value {
	__u32 id;
	__u32 flags;
	__u32 generation;
	__u32 reserved;
};

/* ---- conntrack: LRU hash, scoped by ifindex and the connection's direction ----
 * The key is the tuple of the connection's first packet; `direction` is the hook
 * direction that packet was seen in. A reply is found by swapping the tuple and
 * flipping the direction. ICMP echo: request ports (id, 0), reply ports (0, id).
 */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u8 proto;
	__u8 family;    /* 4 or 6 */
	__u8 direction; /* DIR_* of the connection's first packet */
	__u8 pad;
};

/* ct_entry.state bits */
#define CT_S_SEEN_REPLY 1
#define CT_S_FIN_ORIG 2
#define CT_S_FIN_REPLY 4
#define CT_S_RST 8
#define CT_S_ENDED 16

struct ct_entry {
	__u64 created_ns;
	__u64 expires_ns;
	__u64 last_report_ns;  /* last event that carried counters */
	__u64 packets;         /* original direction, since the last report (skbs) */
	__u64 bytes;           /* original direction, since the last report (skb->len) */
	__u64 reply_packets;
	__u64 reply_bytes;
	__u64 tcp_flags;       /* bits 0-7: flags seen in the original direction, 8-15: reply */
	__u64 state;           /* CT_S_* */
	__u32 remote_identity;
	__u32 attribution;
	__u32 generation;      /* policy generation the connection was last judged by */
	__u8 verdict;          /* VERDICT_FORWARDED or VERDICT_AUDIT */
	__u8 pad[3];
};

/* ---- drop rate limiting: LRU hash ---- */
struct drop_key {
	struct ct_key tuple; /* the dropped packet's tuple; direction = hook direction */
	__u32 reason;
};

struct drop_state {
	__u64 last_report_ns;
	__u64 suppressed;      /* drops not reported since the last report */
	__u32 remote_identity; /* as of the last drop (for swept reports) */
	__u32 attribution;
};

/* ---- IPv4/IPv6 fragments: LRU hash of first fragments' L4 ports ---- */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct frag_value {
	__u64 expires_ns;
	__u16 sport;
	__u16 dport;
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 pad;
};

#define FRAG_TIMEOUT_NS (30ULL * 1000000000ULL)

/* ---- configuration: ARRAY[1] ----
 * A zero report_interval_ns means "not configured": the defaults apply. Zero
 * timeouts also fall back to their defaults.
 */
#define AGG_NONE 0
#define AGG_LOW 1
#define AGG_MEDIUM 2
#define AGG_MAXIMUM 3

#define DEFAULT_AGGREGATION AGG_MEDIUM
#define DEFAULT_REPORT_INTERVAL_NS (5ULL * 1000000000ULL)
#define DEFAULT_DROP_INTERVAL_NS (1ULL * 1000000000ULL)
#define DEFAULT_CT_TCP_SYN_NS (60ULL * 1000000000ULL)
#define DEFAULT_CT_TCP_ESTABLISHED_NS (21600ULL * 1000000000ULL)
#define DEFAULT_CT_TCP_CLOSE_NS (10ULL * 1000000000ULL)
#define DEFAULT_CT_OTHER_NS (60ULL * 1000000000ULL)

struct dp_config {
	__u32 aggregation;
	__u32 flags; /* reserved, zero */
	__u64 report_interval_ns;
	__u64 drop_interval_ns;
	__u64 ct_tcp_syn_ns;
	__u64 ct_tcp_established_ns;
	__u64 ct_tcp_close_ns;
	__u64 ct_other_ns;
};

/* ---- metrics: PERCPU_ARRAY indexed by METRIC_KEY ---- */
#define METRIC_KEY(dir, verdict, reason) \
	((((__u32)(dir) & 1) << 11) | (((__u32)(verdict) & 7) << 8) | ((__u32)(reason) & 0xff))

struct metric_value {
	__u64 packets;
	__u64 bytes;
};

/* ---- failed perf outputs: PERCPU_ARRAY[FAILED_OUTPUT_SLOTS] of __u64 ---- */
#define FAILED_NO_READER 0 /* -ENOENT: no perf ring installed for this CPU */
#define FAILED_RING_FULL 1 /* -ENOSPC: the ring was full */
#define FAILED_OTHER 2

/* ---- flow events (perf event array) ---- */
#define EV_START 1    /* a connection entry was created */
#define EV_FLAGS 2    /* TCP flags (first appearance per direction; level low: SYN/FIN/RST) */
#define EV_PERIODIC 3 /* counters of a long-lived connection */
#define EV_END 4      /* TCP connection closed (RST, or FIN seen in both directions) */
#define EV_DROP 5     /* a dropped packet */
#define EV_PACKET 6   /* one packet (level none; related ICMP errors at every level) */

#define CT_STATE_NONE 0 /* decided before conntrack (parse errors, unknown endpoint) */
#define CT_STATE_NEW 1
#define CT_STATE_ESTABLISHED 2
#define CT_STATE_REPLY 3
#define CT_STATE_RELATED 4

/* flow_event.flags */
#define EVF_FRAGMENT 1  /* a non-first fragment (ports from the fragment table) */
#define EVF_RECHECK 2   /* policy rechecked: the endpoint's policy generation changed */
#define EVF_HOST 4      /* the peer is the pod's own node: allowed without policy */
#define EVF_SYNTHETIC 8 /* made by user space (e.g. flushed suppressed-drop counts) */

struct flow_event {
	__u64 ts_ns;         /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 packets;       /* original direction, since the connection's last report */
	__u64 bytes;
	__u64 reply_packets; /* reply direction, since the connection's last report */
	__u64 reply_bytes;
	__u32 ifindex;
	__u32 endpoint_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 attribution;
	__u32 suppressed;    /* drops of this (tuple, reason) not reported since the last */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 drop_reason;
	__u8 family;         /* 4 or 6; 0 when the packet was not parsed that far */
	__u8 proto;
	__u8 direction;      /* DIR_* */
	__u8 verdict;
	__u8 tcp_flags;
	__u8 is_reply;
	__u8 ct_state;
	__u8 reason;         /* EV_* */
	__u8 icmp_type;
	__u8 icmp_code;
	__u32 pkt_len;       /* skb->len of the packet that triggered the event */
	__u32 flags;         /* EVF_* */
};

#endif /* SENSILLA_H */
