"""Outbound channels (e-mail, webhooks; Telegram joins later) behind one interface. No Flask here."""
