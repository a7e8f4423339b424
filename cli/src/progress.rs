//! Import and push progress on a terminal: one bar per layer (bytes read or sent of its blob) and
//! an overall line, drawn with indicatif from the library's [`ImportEvent`]s. Nothing is drawn when stderr is not a
//! terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata::import::{ImportEvent, Progress};

/// The bars of one import; cleared from the terminal when dropped.
pub struct Bars {
    state: Option<Arc<Mutex<State>>>,
}

struct State {
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    layers: HashMap<usize, (ProgressBar, u64)>,
    total: usize,
    done: usize,
}

/// Images with more layers show only the bars of the layers in progress.
const KEEP_FINISHED_UP_TO: usize = 20;

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The first 12 hex digits of a layer's digest (the whole label when it is not one).
fn short(layer: &str) -> String {
    let h = layer.strip_prefix("sha256:").unwrap_or(layer);
    h.chars().take(12).collect()
}

impl State {
    /// A finished layer's bar stays, unless there are too many to fit a terminal.
    fn finish(&self, pb: &ProgressBar, msg: &'static str) {
        if self.total > KEEP_FINISHED_UP_TO {
            pb.finish_and_clear();
        } else {
            pb.finish_with_message(msg);
        }
    }

    fn overall_message(&self) -> String {
        format!("{}/{} layers", self.done, self.total)
    }

    fn on(&mut self, e: &ImportEvent) {
        match e {
            ImportEvent::Start { layers, bytes } => {
                self.total = *layers;
                let pb = self.multi.add(ProgressBar::new(*bytes));
                pb.set_style(style("{msg:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}"));
                pb.set_message(self.overall_message());
                self.overall = Some(pb);
            }
            ImportEvent::LayerStarted { index, layer, size } => {
                let pb = ProgressBar::new(size.unwrap_or(0));
                let pb = match &self.overall {
                    Some(o) => self.multi.insert_before(o, pb),
                    None => self.multi.add(pb),
                };
                pb.set_style(style("{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {msg}"));
                pb.set_prefix(short(layer));
                self.layers.insert(*index, (pb, size.unwrap_or(0)));
            }
            ImportEvent::LayerBytes { index, bytes } => {
                if let Some((pb, _)) = self.layers.get(index) {
                    pb.inc(*bytes);
                }
                if let Some(o) = &self.overall {
                    o.inc(*bytes);
                }
            }
            ImportEvent::LayerDone { index, unpacked } => {
                self.done += 1;
                if let Some((pb, _)) = self.layers.get(index) {
                    self.finish(pb, if *unpacked { "unpacked" } else { "stored" });
                }
                self.update_overall();
            }
            ImportEvent::LayerPosition { index, position } => {
                if let Some((pb, _)) = self.layers.get(index) {
                    let before = pb.position();
                    pb.set_position(*position);
                    if let Some(o) = &self.overall {
                        // A retried upload starts over: the overall bar goes back with it.
                        o.set_position((o.position() + position).saturating_sub(before));
                    }
                }
            }
            ImportEvent::LayerSent { index, how } => {
                self.done += 1;
                if let Some((pb, size)) = self.layers.get(index) {
                    if let Some(o) = &self.overall {
                        o.inc(size.saturating_sub(pb.position()));
                    }
                    pb.set_position(*size);
                    self.finish(pb, how);
                }
                self.update_overall();
            }
            ImportEvent::LayerReused { index } => {
                self.done += 1;
                if let Some((pb, size)) = self.layers.get(index) {
                    pb.set_position(*size);
                    self.finish(pb, "already present");
                    if let Some(o) = &self.overall {
                        o.inc(*size);
                    }
                }
                self.update_overall();
            }
        }
    }

    fn update_overall(&self) {
        if let Some(o) = &self.overall {
            o.set_message(self.overall_message());
        }
    }
}

impl Bars {
    /// Bars on stderr when `wanted` and stderr is a terminal; otherwise none.
    pub fn on_terminal(wanted: bool) -> Bars {
        if !wanted || !std::io::stderr().is_terminal() {
            return Bars { state: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let state = State { multi, overall: None, layers: HashMap::new(), total: 0, done: 0 };
        Bars { state: Some(Arc::new(Mutex::new(state))) }
    }

    /// The callback to give the import (`None` when nothing is drawn).
    pub fn progress(&self) -> Option<Progress> {
        let state = self.state.clone()?;
        Some(Progress::new(move |e| state.lock().unwrap_or_else(|p| p.into_inner()).on(e)))
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Some(s) = &self.state {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            for (pb, _) in s.layers.values() {
                pb.finish_and_clear();
            }
            if let Some(o) = &s.overall {
                o.finish_and_clear();
            }
            let _ = s.multi.clear();
        }
    }
}
