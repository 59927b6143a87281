//! Talking to the person at the terminal: messages and prompts on stderr, a
//! spinner only when stderr is a terminal, and opening the browser.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress and prompts go (stderr; stdout carries results only).
#[derive(Clone, Debug)]
pub struct Ui {
    quiet: bool,
    tty: bool,
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        Ui {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Progress and notes; not shown with `--quiet`.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// Something the user must act on (a URL, a code); always shown.
    pub fn prompt(&self, text: &str) {
        eprintln!("{text}");
    }

    /// A warning; always shown.
    pub fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }

    /// A spinner with `message` while waiting, when stderr is a terminal.
    pub fn spinner(&self, message: &str) -> Spinner {
        if !self.tty {
            return Spinner(None);
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }
}

/// A running spinner (or nothing); cleared by [`Spinner::finish`] or drop.
#[derive(Debug)]
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// Try to open `url` in the user's browser. On Linux without a graphical
/// session (and no `$BROWSER`) nothing is tried, so a text browser never
/// takes over the terminal.
pub fn open_browser(url: &str) -> bool {
    let graphical = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || std::env::var_os("BROWSER").is_some()
        || cfg!(not(target_os = "linux"));
    graphical && webbrowser::open(url).is_ok()
}
