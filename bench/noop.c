/* The floor of a hook call: exec of a static program that does nothing. */
int main(void) { return 0; }
