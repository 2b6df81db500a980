"""The worker's Telegram runtime: one leader per bot token polls (or reads stored webhook updates) and sends.

python-telegram-bot's `Application` is driven inside the worker's own asyncio loop (`initialize`, `start`,
`updater.start_polling`; never `run_polling`, never a `Bot` per call). Pages reach it as `telegram.send` jobs
that only the leader claims, so Telegram's limits, which are per token, are kept in one place: at most 30
messages in any second overall, one second between two messages to one private chat, twenty a minute to a
group (the per-chat spacing, `next_send_at`, lives in the database so a new leader honours it). A 429
reschedules its job at `retry_after` and pauses every send; network errors retry with backoff; a bot that was
blocked or a chat that is gone marks the chat undeliverable and the page falls through to the next channel.
Domain services stay synchronous and run in a small thread pool, one session per call.

The modules, from the bottom up: `settings`; `views` (what a message says); `delivery` (a page's delivery
rows as Telegram sends them); `outbox` (pages and board posts become send jobs); `sends` (what became of each
send, and the leader's row); `presses` and `commands` (buttons, commands and the board's directives);
`updates` (webhook updates stored for the leader); `transport` (rate limiting and the HTTP pools); `runtime`
(the leader in the worker's loop); `webhook` (the web route). Link codes and button actions are playbook use
cases (`playbooks/telegram_links.py`), so the web never imports this worker code.
"""
