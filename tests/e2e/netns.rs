//! A private network for broker processes, made by the test: one network namespace per
//! broker, joined by a bridge in a hub namespace, with one more link from the test's own
//! namespace so the test (the client) reaches every broker. Addresses are in a /24 of
//! 10.0.0.0/8 that nothing on the machine uses; no packet leaves the machine.
//!
//! A partition is made the way a switch failure looks to TCP: frames between the two
//! sides are addressed to a MAC no one has (a permanent neighbour entry on both sides),
//! so they vanish silently; connections hang instead of failing fast, as they would.
//! Healing deletes those entries and ARP finds the real addresses again.
//!
//! Needs root (CAP_NET_ADMIN) and `ip` from iproute2. Everything is removed on drop;
//! namespaces left by a test process that was killed are removed by the next one.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const NOWHERE: &str = "02:00:5e:00:00:01";

pub struct Net {
    /// Namespace and interface names start with this (unique per process and net).
    tag: String,
    /// Short form for interface names (15 bytes at most).
    ifx: String,
    /// The /24 as "10.a.b".
    subnet: String,
    n: u64,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("runs `ip` (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

impl Net {
    /// A network for brokers 1..=n.
    pub fn new(n: u64) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("strata-{pid}-{k}");
        let ifx = format!("sn{:x}", (pid << 4 | (k & 0xf)) & 0xff_ffff);
        let subnet = free_subnet(pid, k);
        let net = Self {
            tag,
            ifx,
            subnet,
            n,
        };
        let hub = net.hub();
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for id in 1..=n {
            let ns = net.ns(id);
            let port = format!("{}h{id}", net.ifx);
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &port, "netns", &hub, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            let addr = format!("{}/24", net.ip(id));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        // The test's own end.
        let (root, port) = (format!("{}r", net.ifx), format!("{}hr", net.ifx));
        ip(&[
            "link", "add", &root, "type", "veth", "peer", "name", &port, "netns", &hub,
        ]);
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
        ip(&["addr", "add", &format!("{}.1/24", net.subnet), "dev", &root]);
        ip(&["link", "set", &root, "up"]);
        net
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// Broker `id`'s namespace.
    pub fn ns(&self, id: u64) -> String {
        format!("{}-{id}", self.tag)
    }

    /// Broker `id`'s address.
    pub fn ip(&self, id: u64) -> String {
        format!("{}.{}", self.subnet, 10 + id)
    }

    /// The test's own address on this network (servers the brokers reach listen here).
    pub fn host_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Cuts broker `id` off from every other broker; the test still reaches it.
    pub fn cut_off(&self, id: u64) {
        for other in (1..=self.n).filter(|o| *o != id) {
            for (from, to) in [(id, other), (other, id)] {
                ip(&[
                    "-n",
                    &self.ns(from),
                    "neigh",
                    "replace",
                    &self.ip(to),
                    "lladdr",
                    NOWHERE,
                    "nud",
                    "permanent",
                    "dev",
                    "eth0",
                ]);
            }
        }
    }

    /// Undoes every [`Net::cut_off`].
    pub fn heal(&self) {
        for from in 1..=self.n {
            for to in (1..=self.n).filter(|t| *t != from) {
                ip_quiet(&[
                    "-n",
                    &self.ns(from),
                    "neigh",
                    "del",
                    &self.ip(to),
                    "dev",
                    "eth0",
                ]);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for id in 1..=self.n {
            ip_quiet(&["netns", "del", &self.ns(id)]);
        }
        ip_quiet(&["netns", "del", &self.hub()]);
        ip_quiet(&["link", "del", &format!("{}r", self.ifx)]);
    }
}

/// A 10.a.b.0/24 that no address or route on this machine is in.
fn free_subnet(pid: u32, k: u32) -> String {
    let used = String::from_utf8(
        Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .expect("runs `ip`")
            .stdout,
    )
    .unwrap();
    let mut z = (pid as u64) << 32 | k as u64;
    loop {
        z = z
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29)
            .wrapping_add(0xBF58_476D_1CE4_E5B9);
        let b = z.to_le_bytes();
        let subnet = format!("10.{}.{}", 1 + b[0] % 250, b[1]);
        if !used.contains(&format!("{subnet}.")) {
            return subnet;
        }
    }
}

/// Namespaces of test processes that no longer run (killed before their drop).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("strata-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            ip_quiet(&["netns", "del", name]);
        }
    }
}
