//! Pinning a thread to one CPU (`sched_setaffinity`), for the
//! thread-per-core layout: a replica's thread, and each I/O thread, on a
//! CPU of its own, so the scheduler never moves a loop away from its warm
//! caches or puts two loops on one CPU while another idles.
//!
//! Pinning is opt-in (`ramcoord coordinator --pin-cpus`): three replicas
//! sharing a small machine must not all pin to CPU 0, and only the
//! operator knows which CPUs a replica owns. Where pinning is not allowed
//! (a CPU outside the process's cpuset, a container that forbids it), the
//! thread runs unpinned and the refusal is logged: a slower thread is
//! better than a replica that does not start.

/// Pins the calling thread to `cpu`; logs and carries on where that is
/// refused. `role` names the thread in the log.
pub fn pin_current_thread(cpu: usize, role: &str) {
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        tracing::warn!(cpu, role, "cannot pin: no such CPU; running unpinned");
        return;
    }
    set.set(cpu);
    match rustix::thread::sched_setaffinity(None, &set) {
        Ok(()) => tracing::info!(cpu, role, "thread pinned"),
        Err(e) => tracing::warn!(cpu, role, error = %e, "pinning refused; running unpinned"),
    }
}

/// The one CPU the calling thread may run on, if it is pinned.
pub fn pinned_cpu() -> Option<usize> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    // Pinned: exactly one CPU allowed.
    let allowed: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect();
    (allowed.len() == 1).then(|| allowed[0])
}
