// icmp_echo: a tc program that answers ICMP echo requests itself.
//
// Attached at the ingress hook of a pod's host-side veth, it sees every packet the pod
// sends. An echo request (ping) is turned into its own reply in place: MAC and IP
// addresses swapped, type 8 (echo request) made 0 (echo reply), the ICMP checksum
// fixed, and the packet sent back out of the interface it came in on, towards the pod.
// The request never reaches the address it was sent to. Everything else passes.
//
// Build: clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c icmp_echo.bpf.c
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// The ICMP header, declared here: <linux/icmp.h> pulls in libc headers that a BPF
// target does not have.
struct icmp_echo {
	__u8 type;		// 8: echo request, 0: echo reply
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
// Where the ICMP checksum sits in the frame, for bpf_l4_csum_replace.
#define ICMP_CSUM_OFF(ihl) (sizeof(struct ethhdr) + (ihl) + offsetof(struct icmp_echo, checksum))

SEC("tc")
int icmp_echo(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	// Every read of the packet is preceded by a check that it lies before data_end:
	// the verifier refuses the program otherwise.
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_ICMP || ip->ihl != 5)
		return TC_ACT_OK;
	struct icmp_echo *icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) > data_end || icmp->type != ICMP_ECHO || icmp->code != 0)
		return TC_ACT_OK;

	// Swap the Ethernet addresses and the IP addresses. The IP checksum stays right:
	// it is a sum, and the sum of the same two addresses does not depend on the order.
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__be32 requester = ip->saddr, target = ip->daddr;
	ip->saddr = target;
	ip->daddr = requester;

	// Echo request becomes echo reply. The ICMP checksum covers the type, so it is
	// updated for the change of that one 16-bit word (type and code): RFC 1624.
	__u16 seq = bpf_ntohs(icmp->sequence);
	__be16 old = *(__be16 *)icmp;
	icmp->type = ICMP_ECHOREPLY;
	__be16 new = *(__be16 *)icmp;
	// After this helper the packet may have moved: the pointers above are not used again.
	bpf_l4_csum_replace(skb, ICMP_CSUM_OFF(sizeof(*ip)), old, new, sizeof(new));

	bpf_printk("icmp_echo: reply from %pI4 to %pI4, seq %u", &target, &requester, seq);
	// Out of the interface the request came in on: the pod receives the reply.
	return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
