// Vite build of the AgentOS browser client: a static SPA in web/dist that the
// node serves at `/` (and at `/s/<id>`). `npm run dev` proxies the node's
// API and WebSocket to AGENTOS_NODE (default http://127.0.0.1:7890, the
// node's default `[web] listen`).
import { defineConfig } from 'vite';

const node = process.env.AGENTOS_NODE ?? 'http://127.0.0.1:7890';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The node embeds dist/ in its binary: keep it small.
    sourcemap: false,
    target: 'es2022',
  },
  server: {
    proxy: {
      '/api': node,
      '/health': node,
      '/ws': { target: node.replace(/^http/, 'ws'), ws: true },
    },
  },
});
