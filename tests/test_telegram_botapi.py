"""The Bot API stand-in checks what Telegram checks, keeps connections alive, injects failures, delivers updates."""

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter

from notifiers.telegram import retry_seconds
from tests.botapi import BotAPI, parse_html
from tests.live import free_port


@pytest.fixture
def api() -> Iterator[BotAPI]:
    server = BotAPI().start()
    server.add_chat(1001)
    server.add_chat(-5001, title="Ban Chỉ đạo")
    yield server
    server.close()


def run(coro):  # one loop per test: the Bot is created and shut down inside it
    return asyncio.run(coro)


async def _with_bot(api: BotAPI, work, token: str | None = None):
    async with Bot(token or api.token, base_url=api.url) as bot:
        return await work(bot)


def test_a_wrong_token_is_refused_like_telegram(api: BotAPI) -> None:
    with pytest.raises(InvalidToken):
        run(_with_bot(api, lambda bot: bot.get_me(), token="1:WRONG"))
    assert api.state.calls[-1].status == 401


def test_send_message_records_receive_time_and_keyboard(api: BotAPI) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Nhận xử lý", callback_data="a" * 64)]])
    before = time.time()
    message = run(_with_bot(api, lambda bot: bot.send_message(1001, "<b>TH-1</b> &amp; x", parse_mode="HTML",
                                                              reply_markup=keyboard)))  # fmt: skip
    assert message.text == "TH-1 & x"
    (call,) = api.calls_of("sendMessage")
    assert before <= call.at <= time.time()
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "a" * 64


def test_callback_data_over_64_bytes_is_refused(api: BotAPI) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="đ" * 33)]])  # 66 bytes, 33 chars
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        run(_with_bot(api, lambda bot: bot.send_message(1001, "x", reply_markup=keyboard)))
    assert api.calls_of("sendMessage") == []


def test_text_is_limited_to_4096_characters_after_entity_parsing(api: BotAPI) -> None:
    run(_with_bot(api, lambda bot: bot.send_message(1001, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")))
    with pytest.raises(BadRequest, match="too long"):
        run(_with_bot(api, lambda bot: bot.send_message(1001, "x" * 4097)))
    with pytest.raises(BadRequest, match="too long"):
        run(_with_bot(api, lambda bot: bot.send_message(1001, "😀" * 2049)))  # 4,098 UTF-16 units


@pytest.mark.parametrize("text", ["a < b", "<script>x</script>", "<b>x", "AT&T", "<b>x</i>", "x > y"])
def test_html_that_telegram_cannot_parse_is_refused(api: BotAPI, text: str) -> None:
    with pytest.raises(BadRequest, match="parse entities"):
        run(_with_bot(api, lambda bot: bot.send_message(1001, text, parse_mode="HTML")))


def test_html_parser_reads_entities_and_links() -> None:
    assert parse_html('<a href="https://x/?a=1&amp;b=2">&lt;TH&gt; &#273;</a>') == "<TH> đ"


def test_unknown_deleted_and_blocking_chats_fail_as_on_telegram(api: BotAPI) -> None:
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        run(_with_bot(api, lambda bot: bot.send_message(42, "x")))
    api.block(1001)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        run(_with_bot(api, lambda bot: bot.send_message(1001, "x")))
    api.delete_chat(-5001)
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        run(_with_bot(api, lambda bot: bot.send_message(-5001, "x")))


# PTB 22 warns that retry_after becomes a timedelta; PTB_TIMEDELTA=true opts in. Both forms must be read.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
@pytest.mark.parametrize("timedelta_opt_in", ["false", "true"])
def test_injected_429_carries_retry_after_read_as_int_or_timedelta(
    api: BotAPI, monkeypatch: pytest.MonkeyPatch, timedelta_opt_in: str
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", timedelta_opt_in)
    api.fail("sendMessage", 429, retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        run(_with_bot(api, lambda bot: bot.send_message(1001, "x")))
    assert retry_seconds(caught.value) == 3.0
    run(_with_bot(api, lambda bot: bot.send_message(1001, "x")))  # only the next call failed
    assert len(api.calls_of("sendMessage")) == 1


def test_connections_are_kept_alive() -> None:
    api = BotAPI().start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        for _ in range(3):
            conn.request("POST", f"/bot{api.token}/getMe", body=b"")
            response = conn.getresponse()
            assert response.getheader("Connection") != "close"
            assert json.loads(response.read())["ok"] is True
        assert len(api.state.calls) == 3
        conn.close()
    finally:
        api.close()


def test_refused_connections_then_the_same_port_again(api: BotAPI) -> None:
    async def work(bot: Bot) -> list[str]:
        seen = [(await bot.send_message(1001, "a")).text]
        api.refuse_connections(0.5)
        with pytest.raises(NetworkError):
            await bot.send_message(1001, "b")
        await asyncio.sleep(0.8)
        seen.append((await bot.send_message(1001, "c")).text)
        return seen

    assert run(_with_bot(api, work)) == ["a", "c"]


def test_presses_arrive_through_get_updates_with_offsets(api: BotAPI) -> None:
    async def work(bot: Bot):
        message = await bot.send_message(1001, "page")
        api.press(api.user(1001), 1001, message.message_id, "ack-data")
        first = await bot.get_updates(timeout=2)
        again = await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
        return first, again

    first, again = run(_with_bot(api, work))
    assert [u.callback_query.data for u in first] == ["ack-data"]
    assert first[0].callback_query.from_user.id == 1001
    assert again == ()


def test_updates_are_posted_to_the_webhook_with_the_secret_and_its_reply_is_run(api: BotAPI) -> None:
    received: list[tuple[str | None, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.headers.get("X-Telegram-Bot-Api-Secret-Token"), body))
            reply = json.dumps({"method": "answerCallbackQuery", "callback_query_id": body["callback_query"]["id"]})
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hook.server_address[1]}/telegram/webhook"
        run(_with_bot(api, lambda bot: bot.set_webhook(url, secret_token="s3cret_T-1")))
        with pytest.raises(Conflict, match="webhook is active"):
            run(_with_bot(api, lambda bot: bot.get_updates()))
        update = api.press(api.user(1001), 1001, 1, "x")
        api.wait_for(lambda a: a.calls_of("answerCallbackQuery"), what="the webhook's reply")
        assert received == [("s3cret_T-1", update)]
        (answer,) = api.calls_of("answerCallbackQuery")
        assert answer.via == "webhook-reply"
    finally:
        hook.shutdown()
        hook.server_close()


def test_limit_checker_finds_a_second_message_to_one_chat_within_a_second(api: BotAPI) -> None:
    async def work(bot: Bot) -> None:
        await bot.send_message(1001, "one")
        await bot.send_message(1001, "two")

    run(_with_bot(api, work))
    assert len(api.limit_violations()) == 1


def test_set_my_commands_checks_names_per_language(api: BotAPI) -> None:
    from telegram import BotCommand

    run(_with_bot(api, lambda bot: bot.set_my_commands([BotCommand("ack", "Nhận xử lý")], language_code="vi")))
    assert api.state.commands["vi"] == [{"command": "ack", "description": "Nhận xử lý"}]
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        run(_with_bot(api, lambda bot: bot.set_my_commands([BotCommand("Ack-Now", "x")])))
