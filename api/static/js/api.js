// The REST API with the bearer token. Errors are ApiError: status 0 for "no answer at all".
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

const BASE = "/api/v1";

async function detailOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail) && body.detail[0]?.msg) return body.detail[0].msg;
    return body.error || response.statusText;
  } catch {
    return response.statusText;
  }
}

export function createApi(token, onUnauthorized) {
  async function send(method, path, { params, json, form, raw } = {}) {
    const url = new URL(BASE + path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    const headers = { Authorization: `Bearer ${token}` };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body, cache: "no-store" });
    } catch (error) {
      throw new ApiError(0, "the server did not answer");
    }
    if (response.status === 401) {
      onUnauthorized(await detailOf(response));
      throw new ApiError(401, "session expired");
    }
    if (!response.ok) throw new ApiError(response.status, await detailOf(response));
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  return {
    get: (path, params) => send("GET", path, { params }),
    post: (path, json) => send("POST", path, { json }),
    put: (path, json) => send("PUT", path, { json }),
    upload: (path, form) => send("POST", path, { form }),
    raw: (path) => send("GET", path, { raw: true }),
  };
}
