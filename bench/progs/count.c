/* The baseline of the per-packet cost: a TC program that only parses and counts.
 *
 * It reads the headers the way bpf/sensilla.c does (bpf_skb_load_bytes): Ethernet,
 * IPv4 (IHL honoured) or IPv6, and the first 4 bytes of TCP/UDP/SCTP (the ports),
 * then adds the packet to a per-CPU counter and lets it pass. No endpoint, ipcache,
 * conntrack, policy or event: whatever Sensilla's programs cost above this is the
 * price of enforcement and visibility.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>

struct counter {
	u64 packets;
	u64 bytes;
	u64 l4;
	u64 ports;
};

BPF_PERCPU_ARRAY(counts, struct counter, 2);

static __always_inline int parse_and_count(struct __sk_buff *skb, u32 slot)
{
	u8 eth[14];
	u8 ip[40];
	u8 l4[4];
	u32 off = 14;
	u8 proto = 0;
	u32 ports = 0;

	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0)
		goto count;
	u16 type = ((u16)eth[12] << 8) | eth[13];
	if (type == ETH_P_IP) {
		if (bpf_skb_load_bytes(skb, off, ip, 20) < 0)
			goto count;
		u32 ihl = (ip[0] & 0xF) * 4;
		if (ihl < 20)
			goto count;
		proto = ip[9];
		off += ihl;
	} else if (type == ETH_P_IPV6) {
		if (bpf_skb_load_bytes(skb, off, ip, 40) < 0)
			goto count;
		proto = ip[6];
		off += 40;
	} else {
		goto count;
	}
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
		if (bpf_skb_load_bytes(skb, off, l4, sizeof(l4)) == 0)
			ports = ((u32)l4[0] << 24) | ((u32)l4[1] << 16) | ((u32)l4[2] << 8) | l4[3];
	}
count:;
	struct counter *c = counts.lookup(&slot);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
		c->l4 += proto;
		c->ports += ports;
	}
	return TC_ACT_OK;
}

int count_ingress(struct __sk_buff *skb)
{
	return parse_and_count(skb, 0);
}

int count_egress(struct __sk_buff *skb)
{
	return parse_and_count(skb, 1);
}
