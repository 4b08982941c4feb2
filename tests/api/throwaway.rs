//! Throwaway PostgreSQL and Redis servers for the tests that must kill a server and start it
//! again (the shared ones from `DATABASE_URL` / `REDIS_URL` must not be disturbed).
//!
//! Each server lives in its own temporary directory on a free port of 127.0.0.1 and is
//! stopped, and its directory removed, on drop. The binaries come from `AGENTQ_PG_BIN` (the
//! directory holding `initdb`, `pg_ctl` and `postgres`) and `AGENTQ_REDIS_SERVER` (the
//! `redis-server` executable), which `scripts/test.sh` exports (installing the packages when
//! missing), or else from the usual places. When they cannot be found, the constructors
//! panic: these tests are never skipped.
//!
//! The code is blocking (`std::process`): call it before the runtime work or through
//! `tokio::task::spawn_blocking`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL server of its own: `initdb` with trust authentication (superuser
/// `postgres`), `fsync=off`, listening on 127.0.0.1 only.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    port: u16,
    /// Holds `data/`, the Unix socket and `postgres.log`.
    dir: TempDir,
    /// As root, `initdb` and `postgres` refuse to run: they run as the `postgres` user.
    as_postgres_user: bool,
}

impl ThrowawayPostgres {
    /// Creates a cluster and starts it; panics (with the reason) when it cannot.
    pub fn start() -> ThrowawayPostgres {
        Self::start_with(|_| {})
    }

    /// As [`ThrowawayPostgres::start`], with `setup` called on the new data directory
    /// before the first start (to write files into it, or edit `postgresql.conf` and
    /// `pg_hba.conf`); what it writes is handed to the server's user.
    pub fn start_with(setup: impl FnOnce(&Path)) -> ThrowawayPostgres {
        let bin = pg_bin();
        let as_postgres_user = running_as_root();
        let dir = temp_dir("agentq-pg.");
        if as_postgres_user {
            let status = Command::new("id")
                .arg("postgres")
                .stdout(Stdio::null())
                .status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "running as root, the throwaway PostgreSQL must run as the `postgres` system \
                 user, which does not exist (the Debian `postgresql` package creates it)"
            );
            let output = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(
                output.status.success(),
                "chown postgres: {}: {}",
                dir.path().display(),
                describe(&output)
            );
        }
        let mut server = ThrowawayPostgres {
            bin,
            port: 0,
            dir,
            as_postgres_user,
        };

        let output = server
            .command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-U", "postgres", "-A", "trust"])
            .args(["-E", "UTF8", "--no-locale", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb into {} failed (as root it runs as the postgres user, which must be able \
             to reach that directory; set AGENTQ_TEST_TMP to move it): {}",
            server.data_dir().display(),
            describe(&output)
        );
        setup(&server.data_dir());
        if as_postgres_user {
            let output = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(server.data_dir())
                .output()
                .expect("run chown");
            assert!(output.status.success(), "chown -R: {}", describe(&output));
        }

        // The free port may be taken between finding it and binding it: try a few.
        let mut errors = Vec::new();
        for _ in 0..3 {
            server.port = crate::process::free_port();
            match server.try_start() {
                Ok(()) => return server,
                Err(error) => {
                    errors.push(error);
                    // In case it came up after all.
                    let _ = server.pg_ctl_stop("immediate");
                }
            }
        }
        panic!(
            "the throwaway PostgreSQL did not start:\n{}",
            errors.join("\n---\n")
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory: `data/`, the Unix socket and `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory holding the PostgreSQL binaries (`psql` too, usually).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Clean shutdown (`pg_ctl stop -m fast`): sessions are ended, the server checkpoints.
    pub fn stop(&self) {
        if let Err(error) = self.pg_ctl_stop("fast") {
            panic!("stopping the throwaway PostgreSQL: {error}");
        }
    }

    /// Crash (`pg_ctl stop -m immediate`): every process quits at once, without a
    /// checkpoint; the next start runs crash recovery.
    pub fn kill(&self) {
        if let Err(error) = self.pg_ctl_stop("immediate") {
            panic!("killing the throwaway PostgreSQL: {error}");
        }
    }

    /// Starts the stopped (or killed) server again, same port and data.
    pub fn start_again(&self) {
        if let Err(error) = self.try_start() {
            panic!("restarting the throwaway PostgreSQL: {error}");
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `pg_ctl start -w`, then waits until connections are accepted.
    fn try_start(&self) -> Result<(), String> {
        let dir = self.dir.path().display().to_string();
        // A Unix socket path is limited to about 107 bytes: beyond, TCP only.
        let socket = if dir.len() > 80 {
            "-c unix_socket_directories=''".to_string()
        } else {
            format!("-k '{dir}'")
        };
        let output = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", &READY_TIMEOUT.as_secs().to_string()])
            .arg("-o")
            .arg(format!(
                "-p {} {socket} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port
            ))
            .output()
            .map_err(|error| format!("cannot run pg_ctl: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "pg_ctl start on port {} failed: {}\nlog:\n{}",
                self.port,
                describe(&output),
                tail(&self.log_file())
            ));
        }
        self.wait_ready().map_err(|error| {
            format!(
                "started on port {} but {error}\nlog:\n{}",
                self.port,
                tail(&self.log_file())
            )
        })
    }

    /// Polls `pg_isready` (or, without it, a TCP connect) for up to `READY_TIMEOUT`.
    fn wait_ready(&self) -> Result<(), String> {
        let isready = self.bin.join("pg_isready");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = if isready.exists() {
                Command::new(&isready)
                    .args(["-q", "-t", "2", "-h", "127.0.0.1", "-U", "postgres"])
                    .args(["-p", &self.port.to_string(), "-d", "postgres"])
                    .stdin(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            } else {
                tcp_accepts(self.port)
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "it did not accept connections within {READY_TIMEOUT:?}"
                ));
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let output = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", &READY_TIMEOUT.as_secs().to_string()])
            .output()
            .map_err(|error| format!("cannot run pg_ctl: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl stop -m {mode}: {}", describe(&output)))
        }
    }

    /// A command for one of the PostgreSQL binaries, run as the `postgres` user when we are
    /// root, from the temporary directory (which that user can read).
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            as_postgres_user(&program)
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        // Nothing to keep: the quickest stop. Fails harmlessly when it is not running.
        let _ = self.pg_ctl_stop("immediate");
        // The directory goes with `self.dir`.
    }
}

/// `program` (with the arguments added later) as the `postgres` user: `runuser -u postgres
/// --`, or `su postgres -c` where there is no runuser. The `su` form takes its arguments
/// as one shell command, so it wraps `sh -c '"$0" "$@"'` and the arguments follow.
fn as_postgres_user(program: &Path) -> Command {
    if let Some(runuser) = find_executable("runuser", &["/usr/sbin", "/sbin", "/usr/bin", "/bin"]) {
        let mut command = Command::new(runuser);
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        // su [options] user -c COMMAND -- ARGS...: ARGS become $0, $1... of COMMAND.
        let mut command = Command::new("su");
        command
            .args(["-s", "/bin/sh", "postgres"])
            .args(["-c", "exec \"$0\" \"$@\"", "--"])
            .arg(program);
        command
    }
}

/// A Redis server of its own, without persistence: killing it loses the data.
pub struct ThrowawayRedis {
    server: PathBuf,
    /// More arguments for `redis-server`.
    args: Vec<String>,
    /// A Sentinel's configuration (Sentinel rewrites it): run in Sentinel mode.
    sentinel_config: Option<String>,
    port: u16,
    /// Holds `redis.log` (and is the server's working directory).
    dir: TempDir,
    child: Mutex<Option<Child>>,
}

impl ThrowawayRedis {
    /// Starts `redis-server` on a free port; panics (with the reason) when it cannot.
    pub fn start() -> ThrowawayRedis {
        Self::start_with(&[])
    }

    /// As [`ThrowawayRedis::start`], with more arguments for `redis-server` (a TLS port,
    /// say: the plain port stays, for the readiness check).
    pub fn start_with(args: &[String]) -> ThrowawayRedis {
        Self::start_inner(args, None)
    }

    /// A Sentinel monitoring the master on `master_port` as `service` (quorum 1, a master
    /// down after 1 s); `auth` is the user and password it reaches the servers with.
    pub fn start_sentinel(master_port: u16, service: &str, auth: Option<(&str, &str)>) -> Self {
        let mut config = format!(
            "sentinel monitor {service} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {service} 1000\n\
             sentinel failover-timeout {service} 5000\n"
        );
        if let Some((user, password)) = auth {
            config += &format!(
                "sentinel auth-user {service} {user}\nsentinel auth-pass {service} {password}\n"
            );
        }
        Self::start_inner(&[], Some(config))
    }

    fn start_inner(args: &[String], sentinel_config: Option<String>) -> ThrowawayRedis {
        let mut redis = ThrowawayRedis {
            server: redis_server(),
            args: args.to_vec(),
            sentinel_config,
            port: 0,
            dir: temp_dir("agentq-redis."),
            child: Mutex::new(None),
        };
        let mut errors = Vec::new();
        for _ in 0..3 {
            redis.port = crate::process::free_port();
            match redis.try_start() {
                Ok(()) => return redis,
                Err(error) => errors.push(error),
            }
        }
        panic!(
            "the throwaway Redis did not start:\n{}",
            errors.join("\n---\n")
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, and waits for the process to be gone. Without persistence, every key is
    /// lost. Does nothing when the server is not running.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut process) = child.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts the killed server again, same port (and empty).
    pub fn start_again(&self) {
        assert!(
            !self.running(),
            "start_again: the throwaway Redis on port {} is still running",
            self.port
        );
        if let Err(error) = self.try_start() {
            panic!("restarting the throwaway Redis: {error}");
        }
    }

    fn running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut() {
            Some(process) => matches!(process.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns the server and waits for `+PONG`; on failure the process is reaped.
    fn try_start(&self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(|error| format!("cannot open {}: {error}", self.log_file().display()))?;
        let log_err = log
            .try_clone()
            .map_err(|error| format!("cannot clone the log handle: {error}"))?;
        let mut command = Command::new(&self.server);
        if let Some(config) = &self.sentinel_config {
            // the file comes first; Sentinel keeps what it learns in it
            let file = self.dir.path().join("sentinel.conf");
            fs::write(&file, config)
                .map_err(|error| format!("cannot write {}: {error}", file.display()))?;
            command.arg(&file).arg("--sentinel");
        }
        let mut process = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|error| format!("cannot run {}: {error}", self.server.display()))?;

        let deadline = Instant::now() + READY_TIMEOUT;
        let failure = loop {
            match process.try_wait() {
                Ok(Some(status)) => break format!("redis-server exited ({status})"),
                Ok(None) => {}
                Err(error) => break format!("cannot watch redis-server: {error}"),
            }
            if redis_command(self.port, "PING").as_deref() == Some("+PONG") {
                *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(process);
                return Ok(());
            }
            if Instant::now() >= deadline {
                break format!("no PONG within {READY_TIMEOUT:?}");
            }
            sleep(Duration::from_millis(50));
        };
        let _ = process.kill();
        let _ = process.wait();
        Err(format!(
            "redis-server on port {}: {failure}\nlog:\n{}",
            self.port,
            tail(&self.log_file())
        ))
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
        // The directory goes with `self.dir`.
    }
}

/// Sends one inline command (e.g. `PING`, `GET key`) to the Redis server on 127.0.0.1:port
/// and returns the first line of its reply without the CRLF (`+PONG`, `$-1`...), or `None`
/// when nothing answers within a second or two.
pub fn redis_command(port: u16, command: &str) -> Option<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let line = line.trim_end_matches(['\r', '\n']);
    (!line.is_empty()).then(|| line.to_string())
}

/// Whether something accepts TCP connections on 127.0.0.1:port.
fn tcp_accepts(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

/// A temporary directory under `AGENTQ_TEST_TMP`, else the system's.
fn temp_dir(prefix: &str) -> TempDir {
    let parent = std::env::var_os("AGENTQ_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .unwrap_or_else(|error| panic!("create a directory under {}: {error}", parent.display()));
    // The PostgreSQL server may run as another user: it must be able to enter it (the
    // contents stay private to it: initdb makes data/ 0700).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
    }
    dir
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The directory holding initdb, pg_ctl and postgres: `AGENTQ_PG_BIN`, else the newest
/// /usr/lib/postgresql/*/bin, else pg_config's bindir or where initdb on the PATH lives.
fn pg_bin() -> PathBuf {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(dir) = std::env::var_os("AGENTQ_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            complete(&dir),
            "AGENTQ_PG_BIN={} does not hold initdb, pg_ctl and postgres",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let on_path = find_executable("initdb", &[])
        .and_then(|initdb| fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf));
    for dir in [pg_config, on_path].into_iter().flatten() {
        if complete(&dir) {
            return dir;
        }
    }
    panic!(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres): set AGENTQ_PG_BIN, run \
         the tests through scripts/test.sh (which installs them), or `apt-get install \
         postgresql`"
    );
}

/// `AGENTQ_REDIS_SERVER`, else redis-server on the PATH or in the usual places.
fn redis_server() -> PathBuf {
    if let Some(path) = std::env::var_os("AGENTQ_REDIS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "AGENTQ_REDIS_SERVER={} is not a file",
            path.display()
        );
        return path;
    }
    find_executable("redis-server", &["/usr/bin", "/usr/local/bin", "/usr/sbin"]).unwrap_or_else(
        || {
            panic!(
                "no redis-server: set AGENTQ_REDIS_SERVER, run the tests through \
                 scripts/test.sh (which installs it), or `apt-get install redis-server`"
            )
        },
    )
}

/// `name` on the PATH, else in one of `extra`.
fn find_executable(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Exit status and output of a finished command, for panic messages.
fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
        Err(error) => format!("({}: {error})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One query through the server's own psql, as `postgres` over TCP.
    fn psql(pg: &ThrowawayPostgres, sql: &str) -> Result<String, String> {
        let psql = pg.bin().join("psql");
        assert!(psql.is_file(), "no psql in {}", pg.bin().display());
        let output = Command::new(psql)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(pg.url())
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(describe(&output))
        }
    }

    #[test]
    fn throwaway_postgres_survives_kill_and_restart() {
        let pg = ThrowawayPostgres::start();
        assert!(pg.url().ends_with(&format!(":{}/postgres", pg.port())));
        assert_eq!(psql(&pg, "select 1").unwrap(), "1");
        psql(
            &pg,
            "create table kept (n int); insert into kept values (7)",
        )
        .unwrap();

        pg.kill();
        assert!(!tcp_accepts(pg.port()), "still listening after kill");
        assert!(psql(&pg, "select 1").is_err());

        pg.start_again();
        assert_eq!(psql(&pg, "select n from kept").unwrap(), "7");

        pg.stop();
        assert!(!tcp_accepts(pg.port()), "still listening after stop");
        pg.start_again();
        assert_eq!(psql(&pg, "select count(*) from kept").unwrap(), "1");

        let dir = pg.dir().to_path_buf();
        let port = pg.port();
        drop(pg);
        assert!(!tcp_accepts(port), "still listening after drop");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn throwaway_redis_loses_its_data_when_killed() {
        let redis = ThrowawayRedis::start();
        let port = redis.port();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
        assert_eq!(redis_command(port, "PING").as_deref(), Some("+PONG"));
        assert_eq!(redis_command(port, "SET k v").as_deref(), Some("+OK"));

        redis.kill();
        assert_eq!(redis_command(port, "PING"), None);

        redis.start_again();
        assert_eq!(redis_command(port, "PING").as_deref(), Some("+PONG"));
        assert_eq!(redis_command(port, "GET k").as_deref(), Some("$-1"));

        drop(redis);
        assert_eq!(redis_command(port, "PING"), None);
    }
}
