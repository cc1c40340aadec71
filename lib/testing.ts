/**
 * `fastify-ws-handlers/testing`: the test toolkit, what `injectWS` hides. Clients with and
 * without a port that show the handshake, the frames, the close and the server's terminate
 * reason (toolkit/client.ts, toolkit/test-client.ts), and a socket-free harness for handler objects (toolkit/harness.ts).
 */
export { TestClient, UpgradeRefusedError, wsClient, type ClientOptions, type Handshake, type ReceivedFrame } from './toolkit/client.js'
export { handlerHarness, type HandlerHarness, type HarnessOptions, type PendingTimer, type Step } from './toolkit/harness.js'
