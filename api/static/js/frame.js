// At most one repaint per animation frame: events only change models and ask for a render
// here; every render asked for within a frame runs once, in the next frame.
export const stats = { events: 0, frames: 0, renders: 0, state: "connecting", byType: {} };

const pending = new Set();
let scheduled = 0;
let sequence = 0;

function flush(token) {
  if (token !== scheduled) return;
  scheduled = 0;
  stats.frames += 1;
  const tasks = [...pending];
  pending.clear();
  for (const task of tasks) {
    try {
      task();
    } catch (error) {
      console.error("render failed", error);
    }
  }
}

export function schedule(task) {
  pending.add(task);
  if (scheduled) return;
  sequence += 1;
  const token = (scheduled = sequence);
  // A hidden tab gets no animation frames; its badge and title still follow, less often.
  if (document.hidden) setTimeout(() => flush(token), 250);
  else requestAnimationFrame(() => flush(token));
}

document.addEventListener("visibilitychange", () => {
  if (scheduled && document.hidden) {
    const token = scheduled;
    setTimeout(() => flush(token), 250);
  }
});
