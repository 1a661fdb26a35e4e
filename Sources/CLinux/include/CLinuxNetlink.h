#ifndef CONVEY_CLINUX_NETLINK_H
#define CONVEY_CLINUX_NETLINK_H
/* rtnetlink definitions for the neighbour-table and address readers (RTM_GETNEIGH and
 * RTM_GETADDR dumps). Only the integer
 * constants and structs are used from Swift; the NLMSG_ and RTA_ alignment macros are
 * re-derived there (4-byte alignment). */
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/neighbour.h>
#include <linux/if_addr.h>
#endif
