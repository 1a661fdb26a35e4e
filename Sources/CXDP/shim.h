#ifndef CONVEY_CXDP_SHIM_H
#define CONVEY_CXDP_SHIM_H
/* libxdp / libbpf and the kernel's AF_XDP definitions, imported into Swift as one module. */
#include <linux/if_xdp.h>
#include <linux/if_link.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>
#endif
