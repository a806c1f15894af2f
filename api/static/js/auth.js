// The token arrives once, in `?token=`; it then lives in this tab's sessionStorage only, and
// the address bar (history, bookmarks, screenshots) no longer shows it.
const KEY = "finrt.token";

export function takeToken() {
  const url = new URL(window.location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(KEY, given);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/** The JWT's claims, unverified: the page only needs `sub` (its channel) and `exp`. */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const claims = JSON.parse(atob(padded));
    return typeof claims.sub === "string" && claims.sub ? claims : null;
  } catch {
    return null;
  }
}
