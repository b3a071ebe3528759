// The run store: the tables of consumers/run_store.py, on better-sqlite3 (WAL, synchronous
// FULL: a commit is on disk before it returns).
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS runs (
    event_id       TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    user_email     TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    app_settings   TEXT NOT NULL,
    data           TEXT NOT NULL,
    event_ts       INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    handled_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id       TEXT PRIMARY KEY,
    processed_at   INTEGER NOT NULL
);
`;

export function openRunStore(path) {
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // better-sqlite3 builds SQLite with WAL's synchronous at NORMAL; syncgate's is FULL.
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.exec(SCHEMA);
  const markProcessed = db.prepare('INSERT OR IGNORE INTO processed_events (event_id, processed_at) VALUES (?, ?)');
  const recordRun = db.prepare('INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
  /**
   * One transaction for a batch of { event, receivedAt }: dedupe on the event id and record
   * the run of each new one. Returns the entries recorded now (the others were duplicates).
   * BEGIN IMMEDIATE, COMMIT (fsync).
   */
  const commit = db
    .transaction((batch) => {
      const now = Date.now();
      const recorded = [];
      for (const entry of batch) {
        const { event, receivedAt } = entry;
        if (markProcessed.run(event.id, now).changes === 0) {
          continue; // processed before: a redelivery, or a second copy in this batch
        }
        recorded.push(entry);
        const { user } = event;
        recordRun.run(
          event.id,
          user.id,
          user.email,
          user.name,
          JSON.stringify(event.appSettings),
          JSON.stringify(event.data ?? null),
          event.ts,
          receivedAt,
          now,
        );
      }
      return recorded;
    })
    .immediate;
  return { db, commit };
}
