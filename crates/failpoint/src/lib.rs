//! Failpoints: named places in the code where a test makes a fault happen on purpose,
//! through the same seam every time (STYLE: never by writing a subsystem's fields).
//!
//! Built on `fail` (tikv/fail-rs) and compiled in only with the `enabled` feature, which
//! test builds turn on; in a release build every function here is a constant.
//!
//! A failpoint is configured by name, in-process with [`configure`] or for a child
//! process with the `FAILPOINTS` environment variable (`name=action;name2=action`,
//! read by [`setup_from_env`]):
//! - `return(SCOPE)`: [`hit`] is true where its subject starts with `SCOPE` (a data
//!   directory, a topic-partition): tests running side by side in one process each
//!   scope a failpoint to what they own. `return` alone matches every subject.
//! - [`crash_at`] ends the process at once, as kill -9 would (no destructor, no flush),
//!   when its failpoint is set to `return` (scoped as above).
//!
//! Names in use are listed in `docs/operations.md`.

#[cfg(feature = "enabled")]
thread_local! {
    /// The subject of the failpoint being evaluated on this thread, for callbacks.
    static SUBJECT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Whether failpoint `name` is set to fire for the subject `subject()` names (built only
/// when failpoints are compiled in, so a release build pays nothing for it). A callback
/// set with [`on_hit`] runs here, on this thread.
#[inline]
pub fn hit(name: &str, subject: impl FnOnce() -> String) -> bool {
    #[cfg(feature = "enabled")]
    {
        let subject = subject();
        SUBJECT.with(|s| s.borrow_mut().clone_from(&subject));
        fail::eval(name, |scope| scope.unwrap_or_default())
            .is_some_and(|scope| subject.starts_with(&scope))
    }
    #[cfg(not(feature = "enabled"))]
    {
        let _ = (name, subject);
        false
    }
}

/// Runs `f` each time failpoint `name` is reached with a subject starting with `scope`
/// (the code goes on afterwards): to make something happen at exactly that step.
pub fn on_hit(name: &str, scope: &str, f: impl Fn() + Send + Sync + 'static) -> Result<(), String> {
    #[cfg(feature = "enabled")]
    {
        let scope = scope.to_string();
        fail::cfg_callback(name, move || {
            if SUBJECT.with(|s| s.borrow().starts_with(&scope)) {
                f()
            }
        })
    }
    #[cfg(not(feature = "enabled"))]
    {
        let _ = (name, scope, f);
        Err("this build has no failpoints (build with the strata-failpoint/enabled feature)".into())
    }
}

/// Ends the process at once (SIGKILL to itself) when failpoint `name` fires for
/// `subject`: a crash at exactly this step, for crash tests of the real binary.
#[inline]
pub fn crash_at(name: &str, subject: impl FnOnce() -> String) {
    if hit(name, subject) {
        eprintln!("failpoint {name}: crashing");
        // SIGKILL, as kill -9 from outside: nothing after this line runs.
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

/// Sets failpoint `name` to `action` (fail-rs syntax, e.g. `return(/tmp/x)`, `off`).
pub fn configure(name: &str, action: &str) -> Result<(), String> {
    #[cfg(feature = "enabled")]
    {
        fail::cfg(name, action)
    }
    #[cfg(not(feature = "enabled"))]
    {
        let _ = (name, action);
        Err("this build has no failpoints (build with the strata-failpoint/enabled feature)".into())
    }
}

/// Turns failpoint `name` off.
pub fn clear(name: &str) {
    #[cfg(feature = "enabled")]
    fail::remove(name);
    #[cfg(not(feature = "enabled"))]
    let _ = name;
}

/// Applies the `FAILPOINTS` environment variable, if set (a no-op without the feature).
pub fn setup_from_env() -> Result<(), String> {
    #[cfg(feature = "enabled")]
    if let Ok(spec) = std::env::var("FAILPOINTS") {
        for entry in spec.split(';').filter(|e| !e.trim().is_empty()) {
            let (name, action) = entry
                .split_once('=')
                .ok_or_else(|| format!("FAILPOINTS entry {entry:?} is not name=action"))?;
            fail::cfg(name.trim(), action.trim())?;
        }
    }
    Ok(())
}
