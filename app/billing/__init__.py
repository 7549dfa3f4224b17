"""Money and limits: keys, quotas, rate limits, pricing. Functions take a Redis client argument."""
