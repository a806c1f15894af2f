// A Live/Paused toggle: a button with a fixed name ("Pause cards") whose aria-pressed says
// whether it is paused, next to a state label ("Live", "Paused", "Paused · new data waiting").
export class LiveToggle {
  constructor(button, label, name, onResume) {
    this.button = button;
    this.label = label;
    this.name = name;
    this.live = true;
    this.pending = false;
    this.onResume = onResume;
    button.addEventListener("click", () => this.set(!this.live));
  }

  set(live) {
    if (live === this.live) return;
    this.live = live;
    this.button.setAttribute("aria-pressed", String(!live));
    if (live) {
      this.pending = false;
      this.onResume();
    }
    this.#show();
  }

  waiting(pending) {
    if (pending === this.pending || (pending && this.live)) return;
    this.pending = pending;
    this.#show();
  }

  #show() {
    this.label.dataset.state = this.live ? "live" : "paused";
    this.label.textContent = this.live ? "Live" : this.pending ? "Paused · new data waiting" : "Paused";
  }
}
