// unchecked: reads a packet without first checking that it is long
// enough. The verifier refuses to load it: a frame shorter than an
// Ethernet header would make the read go past the packet's end.
//
// Build: clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu \
//          -c unchecked.bpf.c
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int unchecked(struct __sk_buff *skb)
{
	struct ethhdr *eth = (void *)(long)skb->data;

	// Missing: if ((void *)(eth + 1) > (void *)(long)skb->data_end)
	//                  return TC_ACT_OK;
	bpf_printk("unchecked: ethertype %x", bpf_ntohs(eth->h_proto));
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
