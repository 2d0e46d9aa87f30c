#!/usr/bin/env python3
"""Cuts `perf script` output (stdin: cpu-clock samples with call stacks, from scripts/profile-s3)
into workloads by the marks `sealstore bench s3 --marks` wrote, sorts each sample into what it
was doing by the symbols of its stack, and writes OUT/breakdown.md and one folded stack file
per server and workload. With OUT/fsync.txt (perf script of the fsync/fdatasync tracepoints),
also counts the fsyncs of each workload and the time threads spent in them (off CPU, so not
in the samples)."""
import collections, os, re, sys

marks_path, out = sys.argv[1], sys.argv[2]
# Unix time minus CLOCK_MONOTONIC, ns: the marks are Unix times, perf's monotonic ones.
offset = int(sys.argv[3]) if len(sys.argv) > 3 else 0
pids, windows = {}, []
for line in open(marks_path):
    t, rest = line.rstrip("\n").split(" ", 1)
    t = int(t) - offset
    if rest.startswith("pid "):
        _, server, pid = rest.split()
        pids[int(pid)] = server
    else:
        windows.append((t / 1e9, rest))

def workload(t):
    """The line measured at time t: 'PUT 4 KiB objects, 32 clients' (its server aside)."""
    at = None
    for start, what in windows:
        if start <= t:
            at = what
        else:
            break
    if at is None or at == "end":
        return None
    return at.split(": ")[0]

# (category, pattern over any frame of the stack), first match wins: the crypto first (they are
# leaves), then what waits on the disk, then the kernel's I/O, then the layers of user space.
CATEGORIES = [
    ("MD5 (ETag)", r"md5|Md5|md_5"),
    ("SHA-256 / HMAC (SigV4 of requests, payload hashes)", r"sha256|Sha256|sha2::|hmac|Hmac|SHA256"),
    ("AES-GCM (AEAD seal/open)", r"aes_gcm|gcm_|aes_hw|aesni|aes_nohw|EVP_AEAD|ghash|gcm_ghash|aes_gcm_enc|aes_gcm_dec|vpaes|seal_in_place|open_in_place|aws_lc_0_\d+_CRYPTO_gcm"),
    ("fsync / fdatasync (CPU part)", r"fsync|fdatasync|file_write_and_wait|sync_all|sync_data|jbd2|__x64_sys_sync"),
    ("index (redb), besides its fsyncs", r"redb::"),
    ("network: TCP send/receive (kernel)", r"tcp_|sock_|inet_|__sys_sendto|__sys_recvfrom|sendmsg|recvmsg|skb_|__dev_queue_xmit|net_rx|__napi|loopback"),
    ("file writes (kernel, page cache)", r"vfs_write|ext4_file_write|generic_perform_write|ext4_buffered_write|__x64_sys_pwrite|__x64_sys_write\b"),
    ("file reads (kernel, page cache)", r"vfs_read|filemap_read|ext4_file_read|__x64_sys_pread|__x64_sys_read\b"),
    ("files: create, rename, open, stat, unlink, mkdir (kernel)", r"renameat|do_sys_open|do_filp_open|unlinkat|mkdirat|statx|newfstatat|do_unlinkat|path_lookupat|__x64_sys_close|ext4_evict|ext4_create|d_alloc"),
    ("copies (memcpy/memmove in user space)", r"^(__memmove|__memcpy|memcpy|memmove|__memset|bytes::bytes_mut)"),
    ("memory (malloc/free, page faults, zeroing, mmap)", r"malloc|^free$|cfree|realloc|_int_|page_fault|clear_page|do_anonymous_page|mmap|munmap|madvise|__rust_alloc|__rust_dealloc|sdallocx|mallocx"),
    ("scheduling: futex, epoll, wakeups (tokio, blocking-pool hops)", r"futex|schedule|epoll|sched_yield|try_to_wake_up|finish_task_switch|nanosleep|tokio::runtime|parking_lot|std::thread|__x64_sys_clock|syscall_exit_to_user_mode|entry_SYSCALL"),
    ("backend client (object_store S3, reqwest, hyper client)", r"object_store::aws|object_store::client|reqwest|hyper_util::client|quick_xml"),
    ("S3 protocol (s3s, hyper server, HTTP parsing)", r"s3s::|hyper::|http::|httparse|h2::"),
    ("other sealstore", r"sealstore"),
]
CATEGORIES = [(n, re.compile(p)) for n, p in CATEGORIES]

def category(frames):
    for name, pattern in CATEGORIES:
        # copies: the leaf only (a memcpy anywhere up the stack is not this sample's work)
        if name.startswith("copies"):
            if frames and pattern.search(frames[0]):
                return name
            continue
        if any(pattern.search(f) for f in frames):
            return name
    return "other"

HEAD = re.compile(r"^(\S.*?)\s+(\d+)/(\d+)\s+(\d+\.\d+):")
counts = collections.defaultdict(collections.Counter)  # (server, workload) -> category -> samples
folded = collections.defaultdict(collections.Counter)
frames, key = [], None

def flush():
    global frames, key
    if key is not None:
        counts[key][category(frames)] += 1
        folded[key][";".join(reversed(frames)) or "?"] += 1
    frames, key = [], None

for line in sys.stdin:
    line = line.rstrip("\n")
    m = HEAD.match(line)
    if m:
        flush()
        pid, t = int(m.group(2)), float(m.group(4))
        w = workload(t)
        if pid in pids and w is not None:
            key = (pids[pid], w)
        continue
    if not line.strip():
        flush()
        continue
    if key is not None:
        parts = line.strip().split(None, 1)
        sym = parts[1] if len(parts) > 1 else parts[0]
        sym = re.sub(r"\s+\(.*\)$", "", sym)          # the dso
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)      # the offset
        sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)    # the Rust hash
        frames.append(sym)
flush()

# fsyncs per workload: count, and seconds spent inside them (enter to exit, per thread).
fsyncs = collections.defaultdict(lambda: [0, 0.0])
fsync_path = os.path.join(out, "fsync.txt")
if os.path.exists(fsync_path):
    entered = {}
    ev = re.compile(r"\s(\d+)/(\d+)\s+(\d+\.\d+):\s+syscalls:sys_(enter|exit)_(fsync|fdatasync)")
    for line in open(fsync_path):
        m = ev.search(line)
        if not m:
            continue
        pid, tid, t, kind = int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4)
        w = workload(t)
        if pid not in pids or w is None:
            continue
        if kind == "enter":
            entered[tid] = t
        elif tid in entered:
            f = fsyncs[(pids[pid], w)]
            f[0] += 1
            f[1] += t - entered.pop(tid)

seconds = {}
for i, (start, what) in enumerate(windows):
    if what == "end":
        continue
    end = windows[i + 1][0] if i + 1 < len(windows) else start
    w = what.split(": ")[0]
    srv = "local" if "local disk" in what else "gateway" if "in front of" in what else None
    if srv:
        seconds[(srv, w)] = seconds.get((srv, w), 0) + end - start

# Requests each server answered in each workload (from the benchmark's results.json).
ops = {}
try:
    import json
    for r in json.load(open(os.path.join(out, "results", "results.json")))["results"]:
        srv = "local" if "local disk" in r["name"] else "gateway" if "in front of" in r["name"] else None
        if srv and r["kind"] == "s3":
            ops[(srv, r["group"])] = r["ops"]
except (OSError, ValueError, KeyError):
    pass

order = sorted({k for k in counts}, key=lambda k: (k[0] != "local", "KiB" in k[1], k[1].startswith("GET")))
with open(os.path.join(out, "breakdown.md"), "w") as md:
    for key in order:
        c = counts[key]
        total = sum(c.values())
        server = "sealstore, local disk" if key[0] == "local" else "sealstore in front of SeaweedFS"
        md.write(f"\n#### {server}: {key[1]}\n\n")
        secs = seconds.get(key, 0)
        # cpu-clock at 199 Hz: samples / 199 = CPU seconds.
        md.write(f"{total} samples = {total / 199:.1f} CPU-seconds in {secs:.1f} s of wall time"
                 f" ({total / 199 / secs if secs else 0:.2f} of the 2 cores)")
        n_ops = ops.get(key)
        if n_ops:
            md.write(f"; {n_ops} requests, {total / 199 / n_ops * 1e6:,.0f} CPU-µs each")
        if key in fsyncs:
            n, s = fsyncs[key]
            md.write(f"; {n} fsync/fdatasync calls" + (f" ({n / n_ops:.2f} per request)" if n_ops else "")
                     + f", {s:.1f} thread-seconds waiting in them")
        md.write("\n\n| share of CPU | what |\n|---:|---|\n")
        for name, n in c.most_common():
            md.write(f"| {n / total * 100:.1f}% | {name} |\n")
        name = f"{key[0]}-{key[1].split(' objects')[0].replace(' ', '-')}.folded"
        with open(os.path.join(out, name), "w") as f:
            for stack, n in folded[key].most_common():
                f.write(f"{stack} {n}\n")
