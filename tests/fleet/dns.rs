//! Members found through a real DNS server: Debian's dnsmasq on 127.0.0.1, started by each
//! test on a port of its own with records the test writes. A node that joins through DNS
//! takes about a third of the keys and no more (consistent hashing), SRV records give each
//! member its port, and a DNS server that goes away takes no member away.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::common::*;
use super::{
    Fleet, Node, NodeSpec, client, common_port, entries, free_port, owner_in, start_node,
    wait_members,
};

/// The name whose A records list the members.
const PEERS: &str = "peers.fleet.test";
/// The name whose SRV records list the members.
const SRV: &str = "_edge._tcp.fleet.test";

/// The dnsmasq binary: on the PATH, or in /usr/sbin where Debian puts it.
fn dnsmasq_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the DNS discovery tests need dnsmasq (Debian: apt-get install dnsmasq-base; \
                 .ci/run installs it)"
            )
        })
}

/// A port free for both UDP and TCP on 127.0.0.1 (dnsmasq serves both).
fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A dnsmasq of the test's own, answering only from its hosts file and its command line (no
/// upstream, no /etc/hosts), with TTL 0; killed when dropped.
struct Dnsmasq {
    child: Child,
    server: SocketAddr,
    hosts: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Dnsmasq {
    /// Starts with `hosts` (lines of an /etc/hosts file) and `args` (more records); returns
    /// once it answers `ready` (a name and a query type).
    fn start(hosts: &str, args: &[String], ready: (&str, u16)) -> Dnsmasq {
        let dir = TempDir::new("dnsmasq");
        let hosts_path = dir.path().join("hosts");
        let log = dir.path().join("dnsmasq.log");
        // dnsmasq reads the hosts file again (on SIGHUP) as the unprivileged user it drops to.
        set_mode(dir.path(), 0o755);
        write_readable(&hosts_path, hosts);
        let server: SocketAddr = ([127, 0, 0, 1], free_dns_port()).into();
        let log_file = std::fs::File::create(&log).expect("create the dnsmasq log");
        let child = Command::new(dnsmasq_binary())
            .arg("--keep-in-foreground")
            .arg("--log-facility=-")
            .arg("--pid-file=")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--addn-hosts={}", hosts_path.display()))
            .arg(format!("--port={}", server.port()))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--local-ttl=0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn dnsmasq");
        let mut dns = Dnsmasq {
            child,
            server,
            hosts: hosts_path,
            log,
            _dir: dir,
        };
        dns.wait_answers(ready.0, ready.1, |n| n > 0);
        dns
    }

    /// Rewrites the hosts file and has dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        write_readable(&self.hosts, hosts);
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on the process this test started and has not reaped.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGHUP) },
            0,
            "SIGHUP dnsmasq"
        );
    }

    /// Waits (bounded) until dnsmasq answers `name` with a count of records that `want` takes.
    fn wait_answers(&mut self, name: &str, qtype: u16, want: impl Fn(u16) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait dnsmasq") {
                panic!("dnsmasq exited ({status}):\n{}", self.log_text());
            }
            if query(self.server, name, qtype).is_some_and(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer {name} as expected within 10s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it (SIGKILL): the server is gone, its port closed.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn write_readable(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the hosts file");
    set_mode(path, 0o644);
}

const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;

/// One DNS query over UDP (RFC 1035 §4.1): the number of answer records, or `None` without a
/// good answer within 200 ms.
fn query(server: SocketAddr, name: &str, qtype: u16) -> Option<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let id: u16 = 0x5e1f;
    // Header: id, flags (a standard query, recursion desired), one question.
    let mut msg = Vec::new();
    for word in [id, 0x0100, 1, 0, 0, 0] {
        msg.extend_from_slice(&word.to_be_bytes());
    }
    for label in name.split('.') {
        msg.push(u8::try_from(label.len()).ok()?);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes()); // class IN
    socket.send_to(&msg, server).ok()?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).ok()?;
    let word = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
    (n >= 12 && word(0) == id && word(2) & 0x000f == 0).then(|| word(6))
}

/// Hosts-file lines giving `name` the addresses `ips`.
fn hosts_of(name: &str, ips: &[&str]) -> String {
    ips.iter().map(|ip| format!("{ip} {name}\n")).collect()
}

fn body_of(path: &str) -> Bytes {
    Bytes::from(format!("body of {path}"))
}

fn segment_origin_reply(path: &str) -> Reply {
    Reply::ok(body_of(path)).header("cache-control", "max-age=60")
}

fn dns_node(origin: &TestOrigin, ip: &str, port: u16, dns: &str) -> Node {
    start_node(&NodeSpec {
        ip: ip.to_owned(),
        port,
        origins: vec![origin.url()],
        cluster: Some(format!(
            "  dns:\n{dns}    interval: 200ms\n  debounce: 200ms\n  probe_interval: 500ms\n  \
             secondary_ttl: 0s\n"
        )),
        extra: String::new(),
    })
}

/// The owner of each key as the node `via(i)` sees key `i` (asking 4 keys at a time); each
/// answer must be the key's body.
async fn owners(
    nodes: &[Node],
    via: impl Fn(usize) -> usize,
    keys: &[String],
    urls: &[String],
) -> Vec<usize> {
    let client = client();
    let asks: Vec<(usize, &Node)> = (0..keys.len()).map(|i| (i, &nodes[via(i)])).collect();
    let chunks = asks.chunks(keys.len().div_ceil(4)).map(|chunk| {
        let client = client.clone();
        async move {
            let mut owners = Vec::new();
            for &(i, node) in chunk {
                let key = &keys[i];
                let r = get(&client, &node.get_url(key)).await;
                assert_eq!(r.status, 200, "{key} via {}", node.url);
                assert_eq!(r.body, body_of(key), "{key} via {}", node.url);
                owners.push(owner_in(&r, urls));
            }
            owners
        }
    });
    futures_util::future::join_all(chunks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_to_dns_joins_every_view_and_takes_a_third_of_the_keys_and_no_more() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    let ips = Fleet::IPS;
    // A records carry no port: every member listens on the configured one.
    let port = common_port(&ips);
    let urls: Vec<String> = ips.iter().map(|ip| format!("http://{ip}:{port}")).collect();
    let mut dns = Dnsmasq::start(&hosts_of(PEERS, &ips[..2]), &[], (PEERS, TYPE_A));
    let discovery = format!(
        "    name: {PEERS}\n    port: {port}\n    server: \"{}\"\n",
        dns.server
    );
    let mut nodes = vec![
        dns_node(&origin, ips[0], port, &discovery),
        dns_node(&origin, ips[1], port, &discovery),
    ];
    wait_members(&nodes.iter().collect::<Vec<_>>(), 2).await;
    let keys: Vec<String> = (0..300).map(|i| format!("/vod/join-{i}.ts")).collect();
    let before = owners(&nodes, |i| i % 2, &keys, &urls).await;
    for n in 0..2 {
        assert!(before.contains(&n), "node {n} owns none of the keys");
    }
    for key in &keys {
        assert_eq!(origin.count_path(key), 1, "{key}");
    }

    // The third node starts, then its address goes into DNS (a pod that became ready).
    nodes.push(dns_node(&origin, ips[2], port, &discovery));
    dns.set_hosts(&hosts_of(PEERS, &ips));
    dns.wait_answers(PEERS, TYPE_A, |n| n == 3);
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3).await;

    // Owners now, as the new node sees them, and as the old node that did not own the key sees
    // them (the old owner still has its copy, and answers from it).
    let after = owners(&nodes, |_| 2, &keys, &urls).await;
    let others = owners(&nodes, |i| 1 - before[i], &keys, &urls).await;
    assert_eq!(
        after, others,
        "the new node and the old ones agree on every owner"
    );
    let mut moved = 0;
    for ((key, &was), &is) in keys.iter().zip(&before).zip(&after) {
        if was == is {
            // Still with its owner, who kept it: not fetched again.
            assert_eq!(origin.count_path(key), 1, "{key} stayed with node {was}");
        } else {
            assert_eq!(
                is, 2,
                "{key} moved from node {was} to node {is}, not the new one"
            );
            assert_eq!(origin.count_path(key), 2, "{key} fetched by its new owner");
            moved += 1;
        }
    }
    let share = moved as f64 / keys.len() as f64;
    // A third on average. The ring's virtual nodes are placed by FNV hashes of the member
    // names, unevenly: with these addresses and keys the new node's share runs from 0.20 to
    // 0.47 over every port it could have (1024-65535, computed with the ring's own code).
    assert!(
        (0.18..=0.5).contains(&share),
        "{moved} of {} keys moved to the new node ({share:.2}); about a third is expected",
        keys.len()
    );
    dns.kill();
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_each_member_its_port_and_a_dns_outage_takes_no_member_away() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    let ips = Fleet::IPS;
    // A port of its own for each node: only the SRV records can tell the nodes where the
    // others listen (an SRV discovery has no port setting).
    let mut ports: Vec<u16> = Vec::new();
    for ip in ips {
        let port = loop {
            let p = free_port(ip);
            if !ports.contains(&p) {
                break p;
            }
        };
        ports.push(port);
    }
    let urls: Vec<String> = ips
        .iter()
        .zip(&ports)
        .map(|(ip, port)| format!("http://{ip}:{port}"))
        .collect();
    // Each SRV target is the member's address written as a name. The nodes connect to a member
    // by its host through the system's resolver, which a test cannot point at this dnsmasq, so
    // a target must need no lookup of its own.
    let records: Vec<String> = ips
        .iter()
        .zip(&ports)
        .map(|(ip, port)| format!("--srv-host={SRV},{ip},{port}"))
        .collect();
    let mut dns = Dnsmasq::start("", &records, (SRV, TYPE_SRV));
    let discovery = format!(
        "    name: {SRV}\n    srv: true\n    server: \"{}\"\n",
        dns.server
    );
    let nodes: Vec<Node> = ips
        .iter()
        .zip(&ports)
        .map(|(ip, port)| dns_node(&origin, ip, *port, &discovery))
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_members(&all, 3).await;

    // Every key through every node: one origin request per key, answered by owners on all
    // three ports.
    let client = client();
    let keys: Vec<String> = (0..60).map(|i| format!("/vod/srv-{i}.ts")).collect();
    let mut owners = [0usize; 3];
    for (i, key) in keys.iter().enumerate() {
        for n in 0..3 {
            let node = &nodes[(i + n) % 3];
            let r = get(&client, &node.get_url(key)).await;
            assert_eq!(r.status, 200, "{key} via {}", node.url);
            assert_eq!(r.body, body_of(key));
            assert!(entries(&r).len() <= 2, "{:?}", entries(&r));
            owners[owner_in(&r, &urls)] += 1;
        }
        assert_eq!(origin.count_path(key), 1, "{key} reached the origin once");
    }
    assert!(
        owners.iter().all(|&n| n > 0),
        "answers by owner: {owners:?}"
    );

    // The DNS server goes away: lookups fail, and every node keeps its members.
    dns.kill();
    within(10, "every node to see DNS lookups fail", async {
        for node in &nodes {
            while node
                .process
                .count_lines("DNS discovery failed; keeping the last members")
                == 0
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    // Longer than a lookup interval and a debounce together, twice over: an empty answer
    // taken for the members would have been applied by now.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
    while tokio::time::Instant::now() < deadline {
        for node in &nodes {
            let m = node.metrics().await;
            assert_eq!(
                metric_sum(&m, "streamedge_cluster_members", &[]),
                3.0,
                "{} lost members with DNS down",
                node.url
            );
            assert_eq!(metric_sum(&m, "streamedge_peer_up", &[]), 2.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &nodes {
        for key in &keys {
            let r = get(&client, &node.get_url(key)).await;
            assert_eq!(r.status, 200, "{key} via {} with DNS down", node.url);
            assert_eq!(r.body, body_of(key));
            assert_eq!(origin.count_path(key), 1, "{key} still with its owner");
        }
    }
    origin.stop().await;
}
