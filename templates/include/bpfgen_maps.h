/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — maps. Sizes come from node_config.h (the plan). Every map is pinned
 * by name, so the programs of one build share them once loaded by the runtime.
 */
#ifndef BPFGEN_MAPS_H
#define BPFGEN_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bpfgen_types.h"

/* Forward SNAT sessions, keyed by the original tuple. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_tuple4);
	__type(value, struct bpfgen_snat_entry);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_snat_v4 SEC(".maps");

/* Reverse index, keyed by the reply tuple {remote, nat addr, remote port, nat port}. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_tuple4);
	__type(value, struct bpfgen_rsnat_entry);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_rsnat_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, BPFGEN_COUNTER_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_counters SEC(".maps");

#if BPFGEN_FRONTENDS_IN_MAP
/* Service frontends, filled by the runtime from the build's map_init.json. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_frontend_key);
	__type(value, struct bpfgen_frontend_value);
	__uint(max_entries, BPFGEN_FRONTENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_frontends SEC(".maps");
#endif

/* bpf_map_update_elem as an int. Before Linux 6.4 the verifier calls the map's
 * own update op, which returns int: only the low 32 bits of r0 are defined, so
 * a 64-bit comparison with -EEXIST fails there (seen on 6.1: every probe after
 * the first was lost). Compare the result as the int it is.
 */
static __always_inline int bpfgen_map_update(void *map, const void *key, const void *value,
					     __u64 flags)
{
	return (int)bpf_map_update_elem(map, key, value, flags);
}

static __always_inline void bpfgen_count(__u32 counter)
{
	__u64 *v = bpf_map_lookup_elem(&bpfgen_counters, &counter);

	if (v)
		*v += 1;
}

/* The one way out for a dropped packet: named reason, counted. */
static __always_inline int bpfgen_drop(enum bpfgen_drop_reason reason)
{
	bpfgen_count(reason);
	return BPFGEN_DROP;
}

static __always_inline int bpfgen_pass(enum bpfgen_event event)
{
	bpfgen_count(event);
	return BPFGEN_PASS;
}

#endif /* BPFGEN_MAPS_H */
