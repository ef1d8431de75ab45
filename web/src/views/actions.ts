// What views may ask of the app: send a control message, navigate, pick a
// line. Implemented by `App`; views depend on this interface only.

import type { ClientMsg } from '../protocol';

export interface Actions {
  /** Send a control message on the current connection (false when offline). */
  send(msg: ClientMsg): boolean;
  /** Show an agent's terminal. */
  openAgent(name: string): void;
  /** Back to the dashboard (owner). */
  openDashboard(): void;
  /** Focus the comments of a line (gutter marker clicked). */
  showLine(line: number): void;
}
