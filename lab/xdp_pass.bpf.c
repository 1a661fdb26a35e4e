// SPDX-License-Identifier: GPL-2.0
// The lab attaches this to the bridge-side end of every veth pair: on veth, frames sent with
// XDP_TX (or redirected) by the peer only arrive when the receiving end runs an XDP program
// (it enables the veth's NAPI path). It passes everything.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int lab_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
