/* The seccomp filter of the tool sandbox: a classic BPF program that bwrap
 * (--seccomp FD) loads into every sandboxed tool and MCP server right
 * before it execs the program, after bwrap built the namespaces (so bwrap
 * itself still may mount and unshare; the tool may not).
 *
 * Refused with EPERM: debugging and reading other processes (ptrace,
 * process_vm_readv/writev), mounting and the new mount API, pivot_root,
 * chroot, namespaces (unshare, setns, and clone with any CLONE_NEW* flag),
 * kernel modules and kexec, reboot, swap, bpf, perf_event_open, the key
 * ring, userfaultfd, open_by_handle_at, acct, quotactl, syslog, clock and
 * time setting, iopl/ioperm. clone3 answers ENOSYS (its flags live in
 * memory BPF cannot read), so libc falls back to clone, whose flags are
 * checked. On x86_64 the x32 ABI (nr >= 0x40000000) is refused and any
 * other architecture (i386 via int 0x80) kills the process. Everything
 * else is allowed: the filter is a deny list on top of the namespaces,
 * rlimits and the unprivileged uid, not the sandbox itself.
 *
 * The program is built once (pthread_once) for the architecture the kernel
 * was compiled for (x86_64, aarch64); elsewhere there is none and tools
 * run without it (sandbox.c logs that). Immutable afterwards; any thread. */
#include "tools/tools.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <errno.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define SC_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SC_ARCH AUDIT_ARCH_AARCH64
#endif

#define SC_MAX 160

static struct sock_filter g_prog[SC_MAX];
static size_t g_n;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void emit(unsigned short code, unsigned char jt, unsigned char jf, unsigned int k)
{
    if (g_n < SC_MAX) g_prog[g_n++] = (struct sock_filter){code, jt, jf, k};
}

static void deny(long nr, int err)
{
    emit(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, (unsigned int)nr);
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | (unsigned int)(err & SECCOMP_RET_DATA));
}

static void build(void)
{
#ifdef SC_ARCH
    static const long denied[] = {
#ifdef __NR_ptrace
        __NR_ptrace,
#endif
#ifdef __NR_process_vm_readv
        __NR_process_vm_readv, __NR_process_vm_writev,
#endif
#ifdef __NR_mount
        __NR_mount,
#endif
#ifdef __NR_umount2
        __NR_umount2,
#endif
#ifdef __NR_umount
        __NR_umount,
#endif
#ifdef __NR_pivot_root
        __NR_pivot_root,
#endif
#ifdef __NR_chroot
        __NR_chroot,
#endif
#ifdef __NR_fsopen
        __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick, __NR_move_mount, __NR_open_tree,
#endif
#ifdef __NR_mount_setattr
        __NR_mount_setattr,
#endif
#ifdef __NR_unshare
        __NR_unshare,
#endif
#ifdef __NR_setns
        __NR_setns,
#endif
#ifdef __NR_kexec_load
        __NR_kexec_load,
#endif
#ifdef __NR_kexec_file_load
        __NR_kexec_file_load,
#endif
#ifdef __NR_init_module
        __NR_init_module, __NR_delete_module,
#endif
#ifdef __NR_finit_module
        __NR_finit_module,
#endif
#ifdef __NR_reboot
        __NR_reboot,
#endif
#ifdef __NR_swapon
        __NR_swapon, __NR_swapoff,
#endif
#ifdef __NR_bpf
        __NR_bpf,
#endif
#ifdef __NR_perf_event_open
        __NR_perf_event_open,
#endif
#ifdef __NR_keyctl
        __NR_keyctl, __NR_add_key, __NR_request_key,
#endif
#ifdef __NR_userfaultfd
        __NR_userfaultfd,
#endif
#ifdef __NR_open_by_handle_at
        __NR_open_by_handle_at,
#endif
#ifdef __NR_acct
        __NR_acct,
#endif
#ifdef __NR_quotactl
        __NR_quotactl,
#endif
#ifdef __NR_syslog
        __NR_syslog,
#endif
#ifdef __NR_settimeofday
        __NR_settimeofday,
#endif
#ifdef __NR_clock_settime
        __NR_clock_settime,
#endif
#ifdef __NR_clock_adjtime
        __NR_clock_adjtime,
#endif
#ifdef __NR_adjtimex
        __NR_adjtimex,
#endif
#ifdef __NR_iopl
        __NR_iopl,
#endif
#ifdef __NR_ioperm
        __NR_ioperm,
#endif
#ifdef __NR_uselib
        __NR_uselib,
#endif
#ifdef __NR_lookup_dcookie
        __NR_lookup_dcookie,
#endif
#ifdef __NR_vhangup
        __NR_vhangup,
#endif
    };
    emit(BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, arch));
    emit(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, SC_ARCH);
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
    emit(BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    emit(BPF_JMP | BPF_JGE | BPF_K, 0, 1, 0x40000000u); /* x32 */
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | EPERM);
#endif
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) deny(denied[i], EPERM);
#ifdef __NR_clone3
    deny(__NR_clone3, ENOSYS);
#endif
    /* clone: refuse any new namespace (flags are args[0]; low 32 bits on
     * these little-endian architectures) */
    const unsigned int ns = CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
                            CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
    emit(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, (unsigned int)__NR_clone);
    emit(BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, args[0]));
    emit(BPF_JMP | BPF_JSET | BPF_K, 0, 1, ns);
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | EPERM);
    emit(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW);
    if (g_n >= SC_MAX) g_n = 0; /* did not fit: no filter rather than a wrong one */
#endif
}

const void *tool_seccomp_program(size_t *len)
{
    pthread_once(&g_once, build);
    *len = g_n * sizeof g_prog[0];
    return g_n ? g_prog : NULL;
}
