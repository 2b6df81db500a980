"""The board's local time: a reference's year, a report's day, what people read."""

from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
