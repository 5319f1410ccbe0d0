// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the stream is
// read from a ReadableStream and parsed here (the text/event-stream format: id, event, data, retry).
// On a dropped connection it reconnects with Last-Event-ID = the last id seen, as EventSource would.
import { ApiError, authHeaders } from "./api";

export interface SseEvent {
  id: string | null;
  event: string;
  data: string;
}

/** Incremental parser: feed it text chunks, it returns the complete events. */
export class SseParser {
  private buffer = "";
  private id: string | null = null;
  private event = "";
  private data: string[] = [];
  lastId: string | null = null;
  retry: number | null = null;

  feed(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const out: SseEvent[] = [];
    let nl: number;
    while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, nl);
      const skip = this.buffer.startsWith("\r\n", nl) ? 2 : 1;
      this.buffer = this.buffer.slice(nl + skip);
      if (line === "") {
        if (this.data.length || this.event) {
          out.push({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
        }
        if (this.id !== null) this.lastId = this.id;
        this.id = null;
        this.event = "";
        this.data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: the heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") this.id = value;
      else if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    }
    return out;
  }
}

export interface Follow {
  /** Stop following (aborts the request; no reconnect). */
  close(): void;
  /** The id of the last event received (what a reconnect sends as Last-Event-ID). */
  lastId(): string | null;
}

export interface FollowOptions {
  url: string;
  since?: string | null;
  onEvent(ev: SseEvent): void;
  /** The connection state for the page: "live", "reconnecting", "ended", or an error message. */
  onState(state: string, error?: ApiError): void;
}

/** Follow ``url`` until an ``end`` event or close(); reconnect after network errors. */
export function follow(opts: FollowOptions): Follow {
  const abort = new AbortController();
  let lastId = opts.since ?? null;
  let retry = 2000;
  let closed = false;

  const run = async (): Promise<void> => {
    while (!closed) {
      const parser = new SseParser();
      try {
        const headers: Record<string, string> = { Accept: "text/event-stream", ...authHeaders() };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const resp = await fetch(opts.url, { headers, signal: abort.signal, cache: "no-store" });
        if (!resp.ok || !resp.body) {
          let message = `HTTP ${resp.status}`;
          try {
            message = (await resp.json()).message ?? message;
          } catch {
            // keep the status
          }
          const err = new ApiError(resp.status, "StreamRefused", message);
          opts.onState(message, err);
          if (resp.status >= 400 && resp.status < 500) return; // no retry for a refusal
          throw err;
        }
        opts.onState("live");
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let ended = false;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const ev of parser.feed(value)) {
            if (ev.event === "end") ended = true;
            opts.onEvent(ev);
          }
          if (parser.lastId) lastId = parser.lastId;
          if (parser.retry) retry = parser.retry;
          if (ended) break;
        }
        if (ended) {
          opts.onState("ended");
          closed = true;
          abort.abort();
          return;
        }
      } catch (err) {
        if (closed || abort.signal.aborted) return;
        if (!(err instanceof ApiError)) opts.onState("reconnecting");
      }
      if (closed) return;
      opts.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
  };
  void run();
  return {
    close() {
      closed = true;
      abort.abort();
    },
    lastId: () => lastId,
  };
}
