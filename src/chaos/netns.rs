//! The network a chaos run's processes live in: one network namespace per
//! process on a Linux bridge, the clients in the root namespace, and
//! partitions made with nftables inside the namespaces.
//!
//! # Layout
//!
//! ```text
//! root namespace: bridge rcc-br 10.77.0.254/24 (clients, the nemesis)
//!   ├─ veth rcc-h1 ── eth0 10.77.0.1 in namespace rcc-n1
//!   ├─ veth rcc-h2 ── eth0 10.77.0.2 in namespace rcc-n2
//!   └─ …
//! ```
//!
//! Every name starts with `rcc-`, and nothing else on the machine is
//! touched: [`Net::clean_stale`] removes whatever a killed run left (every
//! `rcc-` namespace and link), and dropping a [`Net`] removes its own. A
//! process runs in node `i`'s namespace when started through
//! `ip netns exec rcc-n<i>` ([`Net::exec_prefix`]); `ip` execs the program,
//! so the child's pid is the program's.
//!
//! # Faults
//!
//! [`Net::cut`] makes node `a` drop what it receives from the addresses
//! given (one nftables table, `inet rcc`, in its namespace: an input rule
//! per address). Cutting both sides is a partition; one side only is
//! one-way loss. [`Net::heal`] deletes the table of every namespace.
//!
//! Needs root (CAP_NET_ADMIN) and the `ip` and `nft` commands; [`Net::check`]
//! says what is missing.

use std::net::Ipv4Addr;
use std::process::Command;

/// Prefix of every namespace and link this module makes.
pub const PREFIX: &str = "rcc-";
/// The bridge.
pub const BRIDGE: &str = "rcc-br";
/// The root namespace's address on the bridge.
pub const ROOT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
/// Nodes at most (addresses 10.77.0.1 up to this).
pub const NODES_MAX: usize = 200;

/// Why the network could not be built or changed (the command and what
/// it said).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetError(pub String);

/// Runs a command; its stderr (or how it failed to start) as the error.
fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError(format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether this process runs as root (its effective uid, from
/// `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The namespaces of a run (see the module docs).
pub struct Net {
    nodes: usize,
}

impl Net {
    /// Whether this process can build the network: root, `ip`, `nft`.
    pub fn check() -> Result<(), NetError> {
        if !is_root() {
            return Err(NetError(
                "chaos runs its processes in network namespaces, which needs root \
                 (run it with sudo)"
                    .into(),
            ));
        }
        for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            if Command::new(program).arg("-V").output().is_err() {
                return Err(NetError(format!(
                    "`{program}` not found: install {package} (apt-get install {package})"
                )));
            }
        }
        Ok(())
    }

    /// Removes every `rcc-` namespace and link (a run killed before it
    /// cleaned up). Returns how many it removed.
    pub fn clean_stale() -> Result<usize, NetError> {
        let mut n = 0;
        // Links first (a veth's deletion takes its peer in the namespace),
        // then the namespaces.
        for line in run("ip", &["-o", "link", "show"])?.lines() {
            // "12: rcc-h1@if11: <...>" or "5: rcc-br: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or("");
            if name.starts_with(PREFIX) && run("ip", &["link", "delete", name]).is_ok() {
                n += 1;
            }
        }
        for line in run("ip", &["netns", "list"])?.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(PREFIX) {
                run("ip", &["netns", "delete", name])?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Builds the bridge and `nodes` namespaces (stale ones removed first).
    pub fn create(nodes: usize) -> Result<Net, NetError> {
        if nodes == 0 || nodes > NODES_MAX {
            return Err(NetError(format!("1 to {NODES_MAX} nodes, not {nodes}")));
        }
        Net::check()?;
        let stale = Net::clean_stale()?;
        if stale > 0 {
            tracing::info!(
                removed = stale,
                "removed namespaces and links a killed run left"
            );
        }
        // From here on, dropping `net` undoes whatever was made.
        let net = Net { nodes };
        let root = format!("{ROOT_ADDR}/24");
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run("ip", &["addr", "add", &root, "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        for i in 1..=nodes {
            let ns = Net::namespace(i);
            let host = format!("{PREFIX}h{i}");
            let addr = format!("{}/24", Net::addr(i));
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &host, "master", BRIDGE])?;
            run("ip", &["link", "set", &host, "up"])?;
            let in_ns = |args: &[&str]| {
                let mut v = vec!["netns", "exec", ns.as_str(), "ip"];
                v.extend_from_slice(args);
                run("ip", &v)
            };
            in_ns(&["addr", "add", &addr, "dev", "eth0"])?;
            in_ns(&["link", "set", "eth0", "up"])?;
            in_ns(&["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// How many nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Node `i`'s namespace (1-based).
    pub fn namespace(i: usize) -> String {
        format!("{PREFIX}n{i}")
    }

    /// Node `i`'s address (1-based).
    pub fn addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, i as u8)
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn exec_prefix(i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            Net::namespace(i),
        ]
    }

    /// Node `a` drops everything it receives from `from` (addresses; the
    /// root namespace's is [`ROOT_ADDR`]). Adds to what is cut already.
    pub fn cut(&self, a: usize, from: &[Ipv4Addr]) -> Result<(), NetError> {
        let mut script = String::from(
            "add table inet rcc\n\
             add chain inet rcc input { type filter hook input priority 0; policy accept; }\n",
        );
        for ip in from {
            script += &format!("add rule inet rcc input ip saddr {ip} drop\n");
        }
        self.nft(a, &script)
    }

    /// Removes every cut of every node.
    pub fn heal(&self) -> Result<(), NetError> {
        for a in 1..=self.nodes {
            // "add" then "delete": no error when there is no table.
            self.nft(a, "add table inet rcc\ndelete table inet rcc\n")?;
        }
        Ok(())
    }

    fn nft(&self, a: usize, script: &str) -> Result<(), NetError> {
        use std::io::Write;
        let ns = Net::namespace(a);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| NetError(format!("nft in {ns}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| NetError(format!("nft in {ns}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| NetError(format!("nft in {ns}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NetError(format!(
                "nft in {ns} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            // The veth first (both ends go at once): a namespace's devices
            // are destroyed lazily after the namespace is deleted.
            let _ = run("ip", &["link", "delete", &format!("{PREFIX}h{i}")]);
            let _ = run("ip", &["netns", "delete", &Net::namespace(i)]);
        }
        let _ = run("ip", &["link", "delete", BRIDGE]);
    }
}
