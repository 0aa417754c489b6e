"""Pure domain rules of the InMail credits service: stdlib only, time passed in."""
