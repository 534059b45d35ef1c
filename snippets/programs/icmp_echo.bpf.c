// icmp_echo: a tc program that answers ICMP echo requests itself.
//
// At the ingress hook of a pod's host-side veth it sees every packet
// the pod sends. It turns an echo request (ping) into the reply in
// place: MAC and IP addresses swapped, type 8 (echo request) made 0
// (echo reply), the ICMP checksum updated. Then it sends the packet
// back out of the interface it came in on, to the pod. The request
// never reaches the address it was sent to. Other packets pass.
//
// Build: clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu \
//          -c icmp_echo.bpf.c
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// The ICMP header, declared here: <linux/icmp.h> pulls in libc
// headers that a BPF target does not have.
struct icmp_echo {
	__u8 type;		// 8: echo request, 0: echo reply
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
// Where the ICMP checksum is in the frame, for bpf_l4_csum_replace.
#define CSUM_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr) + \
		  offsetof(struct icmp_echo, checksum))

SEC("tc")
int icmp_echo(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	// Each header is read only after checking that it ends before
	// data_end: the verifier refuses the program otherwise.
	if ((void *)(ip + 1) > data_end ||
	    eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_ICMP || ip->ihl != 5)
		return TC_ACT_OK;
	struct icmp_echo *icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) > data_end ||
	    icmp->type != ICMP_ECHO || icmp->code != 0)
		return TC_ACT_OK;

	// Swap the Ethernet and the IP addresses. The IP checksum stays
	// right: it is a sum, and the order of the terms does not matter.
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__be32 requester = ip->saddr, target = ip->daddr;
	ip->saddr = target;
	ip->daddr = requester;

	// Echo request becomes echo reply. The ICMP checksum covers the
	// type: it is updated for the one 16-bit word that changed (type
	// and code), an incremental update as in RFC 1624.
	__u16 seq = bpf_ntohs(icmp->sequence);
	__be16 old = *(__be16 *)icmp;
	icmp->type = ICMP_ECHOREPLY;
	__be16 new = *(__be16 *)icmp;
	// The helper may move the packet: the pointers above are not
	// used after it.
	bpf_l4_csum_replace(skb, CSUM_OFF, old, new, sizeof(new));

	bpf_printk("icmp_echo: reply from %pI4 to %pI4, seq %u",
		   &target, &requester, seq);
	// Out of the interface the request came in on, towards the pod.
	return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
