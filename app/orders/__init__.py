"""The order domain: plans on sale, checkout with PayPal, exactly-once fulfilment, webhooks, the
pending-order look-up, lost-key replacement and key delivery. Only this package changes orders;
the storefront and the admin call it, and the workers run its services."""
